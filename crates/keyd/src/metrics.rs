//! `/metrics`: Prometheus counters and gauges of the authority, in the
//! text exposition format (through `prometheus-client`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

/// What the authority counts. Gauges are set when scraped.
pub struct Metrics {
    registry: Registry,
    pub(crate) enrollments: Counter,
    unlocks: Family<Outcome, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
    hosts: Gauge,
    pending: Gauge,
    audit_entries: Gauge,
    audit_batches: Gauge,
    audit_failed_batches: Gauge,
    audit_queue: Gauge,
    database_up: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("atrest_keyd");
        let enrollments = Counter::default();
        let unlocks = Family::<Outcome, Counter>::default();
        let latency =
            Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let (hosts, pending) = (Gauge::default(), Gauge::default());
        let (audit_entries, audit_batches) = (Gauge::default(), Gauge::default());
        let (audit_failed_batches, audit_queue) = (Gauge::default(), Gauge::default());
        let database_up = Gauge::default();
        registry.register("enrollments", "Hosts enrolled", enrollments.clone());
        registry.register(
            "unlock_outcomes",
            "Unlock requests by outcome (released, pending, or the refusal code)",
            unlocks.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        registry.register("hosts", "Enrolled hosts", hosts.clone());
        registry.register(
            "pending_requests",
            "Requests held for an approver",
            pending.clone(),
        );
        registry.register(
            "audit_entries",
            "Audit entries written since start",
            audit_entries.clone(),
        );
        registry.register(
            "audit_batches",
            "Audit transactions committed since start",
            audit_batches.clone(),
        );
        registry.register(
            "audit_failed_batches",
            "Audit transactions that failed since start (no key was released for them)",
            audit_failed_batches.clone(),
        );
        registry.register(
            "audit_queue",
            "Audit appends waiting for the writer",
            audit_queue.clone(),
        );
        registry.register(
            "database_up",
            "1 while the database answers and takes writes (else releases are refused)",
            database_up.clone(),
        );
        Self {
            registry,
            enrollments,
            unlocks,
            latency,
            hosts,
            pending,
            audit_entries,
            audit_batches,
            audit_failed_batches,
            audit_queue,
            database_up,
        }
    }
}

/// Values read at scrape time.
pub struct Snapshot {
    pub hosts: usize,
    pub pending: usize,
    pub audit: atrest_audit::LogStats,
    pub audit_queue: usize,
    /// The database answered and took writes just now.
    pub database_up: bool,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    pub(crate) fn unlock(&self, outcome: &'static str) {
        self.unlocks.get_or_create(&Outcome { outcome }).inc();
    }

    pub(crate) fn observe(&self, route: &'static str, seconds: f64) {
        self.latency
            .get_or_create(&Route { route })
            .observe(seconds);
    }

    /// The text exposition.
    pub fn render(&self, snapshot: Snapshot) -> String {
        self.hosts.set(gauge_value(snapshot.hosts as u64));
        self.pending.set(gauge_value(snapshot.pending as u64));
        self.audit_entries.set(gauge_value(snapshot.audit.entries));
        self.audit_batches.set(gauge_value(snapshot.audit.batches));
        self.audit_failed_batches
            .set(gauge_value(snapshot.audit.failed_batches));
        self.audit_queue
            .set(gauge_value(snapshot.audit_queue as u64));
        self.database_up.set(i64::from(snapshot.database_up));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
