//! Load generator for `atrest keyd` (and, in `raw` mode, for any server that
//! takes one POST body, such as Tang's `/rec/{kid}`). Driven by
//! `bench/keyd.sh`; every result is one `RESULT key=value ...` line on
//! stdout, progress goes to stderr.
//!
//! ```text
//! keyd_load enroll --url URL --ca CA.pem --admin-token-file F --hosts N --state FILE
//!                  [--concurrency C] [--prefix NAME]
//! keyd_load unlock --url URL[,URL...] --ca CA.pem --state FILE --concurrency 1,16,64 --requests R
//!                  [--duration SECONDS] [--sample K] [--threads T] [--keep-alive 0|1] [--offset I]
//! keyd_load burst  --url URL --ca CA.pem --state FILE [--hosts N] [--threads T]
//! keyd_load once   --url URL --ca CA.pem --state FILE [--print 1]
//! keyd_load raw    --raw-url URL --raw-body FILE [--content-type CT] --concurrency 1,16
//!                  --requests R [--duration SECONDS] [--threads T]
//! keyd_load scoped --url URL --ca CA.pem --app-token-file F --scope S --op decrypt|encrypt|index
//!                  --batch B --concurrency 1,16 --requests R [--duration SECONDS] [--threads T]
//! ```
//!
//! - `enroll`: one enrollment token per host from the admin API, then
//!   `POST /v1/enroll`, and a remote binding made as `atrest enroll` makes
//!   it; the hosts (identity seed, binding, expected key) go to FILE.
//! - `unlock`: for each concurrency, R requests are **signed before the
//!   clock starts** (round robin over the hosts, each with its own fresh
//!   nonce and a blinded point), then fired over keep-alive HTTPS
//!   connections by C workers. The server still verifies every signature,
//!   spends every nonce, makes its audit entry durable and computes the
//!   answer. Every answer must be a 200 `granted`; K of them, spread over
//!   the run, are unblinded and must give the host's key. `--keep-alive 0`:
//!   a new TLS connection per request instead (as Tang is driven). Several
//!   `--url`s (replicas of one authority) share the workers round robin.
//! - `burst`: every host sends one request, all started at once, each on
//!   its own new TLS connection (no session resumption), as hosts booting
//!   together would; reports the time until the last answer.
//! - `once`: one unlock of the first host in FILE, from process start (for
//!   hyperfine): read state, blind, sign, connect, handshake, ask, unblind.
//! - `raw`: the same body POSTed R times, one new connection per request
//!   (no keep-alive: Tang closes every connection), 200 counted as success.
//! - `scoped`: an app's calls to the scoped API over keep-alive HTTPS
//!   connections: B fields of 64 bytes (table `bench`, column `email`, rows
//!   `r0`..) are sealed once, then every request carries all B of them
//!   (`decrypt` the envelopes, `encrypt` the values, or `index` them);
//!   every answer must be a 200; `items_per_s` is requests/s times B. keyd
//!   audits each decryption before it answers (the suite's
//!   `sixteen_concurrent_clients_...` test counts them).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use atrest_keyd::{Clock, EnrollBody, Enrollment, SystemClock, UnlockReply};
use atrest_remote::{
    BootId, HostId, HostIdentity, RemoteBinding, RequestNonce, UnblindingState, UnlockRequest,
    from_base64url, to_base64url,
};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(args) {
        eprintln!("keyd_load: error: {e}");
        std::process::exit(1);
    }
}

struct Opts {
    mode: String,
    flags: HashMap<String, String>,
}

impl Opts {
    fn parse(args: Vec<String>) -> Res<Self> {
        let mut it = args.into_iter();
        let mode = it
            .next()
            .ok_or("usage: keyd_load enroll|unlock|burst|once|raw [--flag value]...")?;
        let mut flags = HashMap::new();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag}"))?
                .to_owned();
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            flags.insert(name, value);
        }
        Ok(Self { mode, flags })
    }
    fn get(&self, name: &str) -> Res<&str> {
        self.flags
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v}")),
        }
    }
    fn list(&self, name: &str) -> Res<Vec<usize>> {
        self.get(name)?
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("--{name}: bad list {v}"))
            })
            .collect()
    }
}

fn run(args: Vec<String>) -> Res<()> {
    let opts = Opts::parse(args)?;
    let threads = opts.num("threads", 2usize)?;
    let rt = if opts.mode == "once" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        match opts.mode.as_str() {
            "enroll" => enroll_hosts(&opts).await,
            "unlock" => unlock_phases(&opts).await,
            "burst" => burst(&opts).await,
            "once" => once(&opts).await,
            "raw" => raw(&opts).await,
            "scoped" => scoped(&opts).await,
            other => Err(format!("unknown mode {other}")),
        }
    })
}

// --- hosts and their state file --------------------------------------------

struct Host {
    id: HostId,
    identity: HostIdentity,
    binding: RemoteBinding,
    key: [u8; 32],
    boot_id: BootId,
    /// The boot ticket of this host's (simulated) boot, from its first
    /// release: sent with every later request, as a host does.
    ticket: Option<atrest_remote::BootTicket>,
}

fn boot_id_for(i: usize) -> BootId {
    BootId::new(format!("00000000-0000-4000-8000-{i:012}")).unwrap()
}

/// A signed unlock request of `h` with a fresh blinding and nonce, and its
/// boot ticket once it has one.
fn unlock_request(
    h: &Host,
    timestamp: u64,
) -> (atrest_remote::SignedUnlockRequest, UnblindingState) {
    let (blinded, state) = h.binding.blind();
    let signed = h.identity.sign(UnlockRequest {
        host_id: h.id.clone(),
        vault_id: [7; 16],
        keyslot: 1,
        key_id: h.binding.key_id(),
        blinded,
        nonce: RequestNonce::random(),
        timestamp,
        boot_id: h.boot_id.clone(),
        generation: None,
    });
    let signed = atrest_remote::SignedUnlockRequest {
        boot_ticket: h.ticket.clone(),
        ..signed
    };
    (signed, state)
}

fn host_line(h: &Host) -> String {
    format!(
        "{} {} {} {} {} {}\n",
        h.id,
        to_base64url(&*h.identity.expose_seed()),
        to_base64url(&h.binding.to_bytes()),
        to_base64url(&h.key),
        h.boot_id,
        h.ticket
            .as_ref()
            .map_or_else(|| "-".to_owned(), |t| to_base64url(&t.0)),
    )
}

fn load_hosts(opts: &Opts) -> Res<Vec<Host>> {
    let path = opts.get("state")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let bad = |n: usize| format!("{path}: line {}: malformed", n + 1);
    let limit = opts.num("hosts", usize::MAX)?;
    let mut hosts = Vec::new();
    for (n, line) in text.lines().enumerate().take(limit) {
        let f: Vec<&str> = line.split(' ').collect();
        let (id, seed, binding, key, boot, ticket) = match f.as_slice() {
            [id, seed, binding, key, boot] => (id, seed, binding, key, boot, None),
            [id, seed, binding, key, boot, ticket] => (id, seed, binding, key, boot, Some(*ticket)),
            _ => return Err(bad(n)),
        };
        hosts.push(Host {
            id: HostId::new(*id).map_err(|_| bad(n))?,
            identity: HostIdentity::from_seed(&from_base64url::<32>(seed).ok_or_else(|| bad(n))?),
            binding: RemoteBinding::from_bytes(
                &from_base64url::<64>(binding).ok_or_else(|| bad(n))?,
            )
            .map_err(|_| bad(n))?,
            key: from_base64url::<32>(key).ok_or_else(|| bad(n))?,
            boot_id: BootId::new(*boot).map_err(|_| bad(n))?,
            ticket: ticket
                .filter(|t| *t != "-")
                .map(|t| from_base64url::<32>(t).map(atrest_remote::BootTicket))
                .map(|t| t.ok_or_else(|| bad(n)))
                .transpose()?,
        });
    }
    if hosts.is_empty() {
        return Err(format!("{path}: no hosts"));
    }
    Ok(hosts)
}

// --- HTTP clients ------------------------------------------------------------

/// A rustls config trusting only the keyd CA, without session resumption
/// (a booting host has no session to resume).
fn tls_config(opts: &Opts) -> Res<rustls::ClientConfig> {
    let path = opts.get("ca")?;
    let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls::pki_types::CertificateDer<'static> =
            cert.map_err(|e| format!("{path}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Every request asks for the newest grant version, as `atrest` hosts do;
/// an authority from before it answers version 1.
fn keyd_client(opts: &Opts, keep_alive: bool) -> Res<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        atrest_keyd::GRANT_VERSION_HEADER,
        reqwest::header::HeaderValue::from(atrest_wire::GRANT_VERSION),
    );
    let mut b = reqwest::Client::builder()
        .default_headers(headers)
        .tls_backend_preconfigured(tls_config(opts)?)
        .no_proxy()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60));
    if !keep_alive {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().map_err(|e| e.to_string())
}

fn now_secs() -> u64 {
    SystemClock.now_ms() / 1000
}

// --- enroll ------------------------------------------------------------------

async fn enroll_hosts(opts: &Opts) -> Res<()> {
    let url = opts.get("url")?.trim_end_matches('/').to_owned();
    let token_path = opts.get("admin-token-file")?;
    let admin = std::fs::read_to_string(token_path).map_err(|e| format!("{token_path}: {e}"))?;
    let admin = Arc::new(admin.trim().to_owned());
    let n: usize = opts.num("hosts", 1)?;
    let concurrency: usize = opts.num("concurrency", 32)?;
    let prefix = Arc::new(
        opts.flags
            .get("prefix")
            .cloned()
            .unwrap_or_else(|| "bench".into()),
    );
    let client = keyd_client(opts, true)?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(n) {
        let (client, url, admin, next, prefix) = (
            client.clone(),
            url.clone(),
            admin.clone(),
            next.clone(),
            prefix.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(out);
                }
                let token: serde_json::Value = client
                    .post(format!("{url}/v1/admin/tokens"))
                    .bearer_auth(admin.as_str())
                    .json(&serde_json::json!({"group": "bench", "expires_in": 3600}))
                    .send()
                    .await
                    .map_err(|e| format!("token: {e}"))?
                    .error_for_status()
                    .map_err(|e| format!("token: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("token: {e}"))?;
                let token = token["token"].as_str().ok_or("token: no token")?.to_owned();
                let identity = HostIdentity::generate();
                let reply = client
                    .post(format!("{url}/v1/enroll"))
                    .json(&EnrollBody {
                        token,
                        host_name: format!("{prefix}-{i:05}"),
                        public_key: identity.public_key(),
                    })
                    .send()
                    .await
                    .map_err(|e| format!("enroll: {e}"))?;
                if !reply.status().is_success() {
                    let status = reply.status();
                    return Err(format!(
                        "enroll: {status}: {}",
                        reply.text().await.unwrap_or_default()
                    ));
                }
                let enrollment: Enrollment =
                    reply.json().await.map_err(|e| format!("enroll: {e}"))?;
                let (binding, key) = atrest_remote::enroll(&enrollment.exchange_key);
                let mut host = Host {
                    id: enrollment.host_id,
                    identity,
                    binding,
                    key: *key.expose(),
                    boot_id: boot_id_for(i),
                    ticket: None,
                };
                // The host's first unlock of its boot: its ticket, which
                // every later request of that boot carries.
                let (signed, _) = unlock_request(&host, now_secs());
                let first: UnlockReply = client
                    .post(format!("{url}/v1/unlock"))
                    .json(&signed)
                    .send()
                    .await
                    .map_err(|e| format!("first unlock: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("first unlock: {e}"))?;
                let UnlockReply::Granted { boot_ticket, .. } = first else {
                    return Err("first unlock: not granted".into());
                };
                host.ticket = boot_ticket;
                out.push((i, host));
                if (i + 1) % 1000 == 0 {
                    eprintln!("keyd_load: enrolled {} hosts", i + 1);
                }
            }
        }));
    }
    let mut hosts = Vec::with_capacity(n);
    for w in workers {
        hosts.extend(w.await.map_err(|e| e.to_string())??);
    }
    hosts.sort_by_key(|(i, _)| *i);
    let secs = start.elapsed().as_secs_f64();
    let path = PathBuf::from(opts.get("state")?);
    let mut text = String::new();
    for (_, h) in &hosts {
        text.push_str(&host_line(h));
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "RESULT kind=enroll hosts={n} secs={secs:.3} per_s={:.1}",
        n as f64 / secs
    );
    Ok(())
}

// --- unlock --------------------------------------------------------------------

struct Prepared {
    bodies: Vec<Vec<u8>>,
    /// (request index, host index, unblinding state) for the verified sample.
    sample: Vec<(usize, usize, UnblindingState)>,
}

/// Signs `count` requests over `hosts` (round robin from `offset`), each with
/// a fresh nonce; keeps the unblinding state of `sample` of them.
fn prepare(hosts: &[Host], count: usize, offset: usize, sample: usize) -> Prepared {
    let timestamp = now_secs();
    let every = (count / sample.max(1)).max(1);
    let mut bodies = Vec::with_capacity(count);
    let mut kept = Vec::new();
    for j in 0..count {
        let hi = (offset + j) % hosts.len();
        let h = &hosts[hi];
        let (signed, state) = unlock_request(h, timestamp);
        bodies.push(serde_json::to_vec(&signed).unwrap());
        if sample > 0 && j % every == 0 && kept.len() < sample {
            kept.push((j, hi, state));
        }
    }
    Prepared {
        bodies,
        sample: kept,
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// Bodies of the sampled requests, by request index.
    answers: HashMap<usize, Vec<u8>>,
    elapsed: Duration,
}

fn is_granted(body: &[u8]) -> bool {
    let pattern = b"\"status\":\"granted\"";
    body.windows(pattern.len()).any(|w| w == pattern)
}

/// C workers take the next prepared body until all are sent or `deadline`
/// passes; worker `w` sends to `urls[w % urls.len()]` (several replicas).
#[allow(clippy::too_many_arguments)] // a bench driver: one call site per mode
async fn fire(
    client: &reqwest::Client,
    urls: &[String],
    content_type: &'static str,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    deadline: Option<Duration>,
    keep: Arc<std::collections::HashSet<usize>>,
    expect_granted: bool,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, url, bodies, next, keep) = (
            client.clone(),
            urls[w % urls.len()].clone(),
            bodies.clone(),
            next.clone(),
            keep.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            let mut answers = HashMap::new();
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= bodies.len() || deadline.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                let t = Instant::now();
                let reply = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(bodies[j].clone())
                    .send()
                    .await;
                let result = match reply {
                    Ok(r) => {
                        let status = r.status();
                        match r.bytes().await {
                            Ok(b) if status == 200 && (!expect_granted || is_granted(&b)) => Ok(b),
                            Ok(b) => Err(format!("{status}: {}", String::from_utf8_lossy(&b))),
                            Err(e) => Err(format!("{status}: body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                lat.push(t.elapsed());
                match result {
                    Ok(b) => {
                        if keep.contains(&j) {
                            answers.insert(j, b.to_vec());
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error, answers)
        }));
    }
    let mut out = Outcome {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        answers: HashMap::new(),
        elapsed: Duration::ZERO,
    };
    for w in workers {
        let (lat, errors, first, answers) = w.await.unwrap();
        out.latencies.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
        out.answers.extend(answers);
    }
    out.elapsed = start.elapsed();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(kind: &str, extra: &str, mut o: Outcome) -> String {
    o.latencies.sort();
    let n = o.latencies.len();
    let secs = o.elapsed.as_secs_f64();
    let mut line = format!(
        "RESULT kind={kind} {extra} n={n} ok={} errors={} secs={secs:.3} per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        n - o.errors,
        o.errors,
        (n - o.errors) as f64 / secs,
        percentile(&o.latencies, 0.50),
        percentile(&o.latencies, 0.99),
        percentile(&o.latencies, 1.0),
    );
    if let Some(e) = o.first_error {
        let e: String = e.chars().take(300).collect::<String>().replace('\n', " ");
        let _ = write!(line, " first_error={e:?}");
    }
    line
}

/// Unblinds the sampled answers; returns how many gave the right key.
fn verify_sample(
    hosts: &[Host],
    sample: Vec<(usize, usize, UnblindingState)>,
    answers: &HashMap<usize, Vec<u8>>,
) -> Res<usize> {
    let mut good = 0;
    for (j, hi, state) in sample {
        let Some(body) = answers.get(&j) else {
            continue;
        };
        let reply: UnlockReply =
            serde_json::from_slice(body).map_err(|e| format!("answer {j}: {e}"))?;
        let UnlockReply::Granted { response, .. } = reply else {
            return Err(format!("answer {j}: not granted"));
        };
        let key = state
            .unblind(&response)
            .map_err(|e| format!("answer {j}: {e}"))?;
        if key.expose() != &hosts[hi].key {
            return Err(format!(
                "answer {j}: unblinds to the WRONG key for {}",
                hosts[hi].id
            ));
        }
        good += 1;
    }
    Ok(good)
}

async fn unlock_phases(opts: &Opts) -> Res<()> {
    let hosts = load_hosts(opts)?;
    // `--url A,B`: replicas of one authority, the workers spread over them.
    let urls: Vec<String> = opts
        .get("url")?
        .split(',')
        .map(|u| format!("{}/v1/unlock", u.trim_end_matches('/')))
        .collect();
    let requests: usize = opts.num("requests", 10_000)?;
    let sample: usize = opts.num("sample", 100)?;
    let deadline = opts
        .flags
        .get("duration")
        .map(|d| Duration::from_secs_f64(d.parse().unwrap_or(10.0)));
    let mut offset = opts.num("offset", 0usize)?;
    let keep_alive = opts.num("keep-alive", 1u8)? != 0;
    for c in opts.list("concurrency")? {
        let client = keyd_client(opts, keep_alive)?;
        let t = Instant::now();
        let prepared = prepare(&hosts, requests, offset, sample);
        offset += requests;
        eprintln!(
            "keyd_load: c={c}: {} requests signed in {:.2} s (not timed)",
            requests,
            t.elapsed().as_secs_f64()
        );
        if keep_alive {
            // Open the connections (one health check per worker), untimed.
            let warm: Vec<_> = (0..c)
                .map(|w| {
                    let url = &urls[w % urls.len()];
                    client.get(url.replace("/v1/unlock", "/healthz")).send()
                })
                .collect();
            for w in warm {
                w.await.map_err(|e| format!("warm-up: {e}"))?;
            }
        }
        let keep = Arc::new(prepared.sample.iter().map(|(j, _, _)| *j).collect());
        let o = fire(
            &client,
            &urls,
            "application/json",
            Arc::new(prepared.bodies),
            c,
            deadline,
            keep,
            true,
        )
        .await;
        let good = verify_sample(&hosts, prepared.sample, &o.answers)?;
        println!(
            "{}",
            report(
                "unlock",
                &format!(
                    "c={c} keep_alive={} hosts={} verified={good}",
                    u8::from(keep_alive),
                    hosts.len()
                ),
                o
            )
        );
    }
    Ok(())
}

async fn burst(opts: &Opts) -> Res<()> {
    let hosts = load_hosts(opts)?;
    let url = format!("{}/v1/unlock", opts.get("url")?.trim_end_matches('/'));
    let n = hosts.len();
    let prepared = prepare(&hosts, n, 0, opts.num("sample", 100)?);
    let client = keyd_client(opts, false)?;
    let keep = Arc::new(prepared.sample.iter().map(|(j, _, _)| *j).collect());
    // One worker per host: all n requests start together, each on its own
    // new connection.
    let o = fire(
        &client,
        std::slice::from_ref(&url),
        "application/json",
        Arc::new(prepared.bodies),
        n,
        None,
        keep,
        true,
    )
    .await;
    let good = verify_sample(&hosts, prepared.sample, &o.answers)?;
    println!(
        "{}",
        report("burst", &format!("hosts={n} verified={good}"), o)
    );
    Ok(())
}

async fn once(opts: &Opts) -> Res<()> {
    let start = Instant::now();
    let hosts = load_hosts(opts)?;
    let h = &hosts[0];
    let url = format!("{}/v1/unlock", opts.get("url")?.trim_end_matches('/'));
    let client = keyd_client(opts, false)?;
    let (signed, state) = unlock_request(h, now_secs());
    let reply = client
        .post(&url)
        .json(&signed)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = reply.status();
    let body = reply.bytes().await.map_err(|e| e.to_string())?;
    let UnlockReply::Granted { response, .. } = serde_json::from_slice(&body)
        .map_err(|e| format!("{status}: {e}: {}", String::from_utf8_lossy(&body)))?
    else {
        return Err(format!("{status}: not granted"));
    };
    let key = state.unblind(&response).map_err(|e| e.to_string())?;
    if key.expose() != &h.key {
        return Err("unblinded to the wrong key".into());
    }
    if opts.flags.contains_key("print") {
        println!(
            "RESULT kind=once ms={:.3}",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

async fn raw(opts: &Opts) -> Res<()> {
    let url = opts.get("raw-url")?.to_owned();
    let path = opts.get("raw-body")?;
    let body = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let content_type: &'static str = match opts.flags.get("content-type").map(String::as_str) {
        None | Some("application/jwk+json") => "application/jwk+json",
        Some("application/json") => "application/json",
        Some(other) => {
            return Err(format!(
                "--content-type {other}: only application/jwk+json or application/json"
            ));
        }
    };
    let requests: usize = opts.num("requests", 2000)?;
    let deadline = opts
        .flags
        .get("duration")
        .map(|d| Duration::from_secs_f64(d.parse().unwrap_or(10.0)));
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let bodies = Arc::new(vec![body; requests]);
    for c in opts.list("concurrency")? {
        let o = fire(
            &client,
            std::slice::from_ref(&url),
            content_type,
            bodies.clone(),
            c,
            deadline,
            Arc::new(Default::default()),
            false,
        )
        .await;
        println!("{}", report("raw", &format!("c={c}"), o));
    }
    Ok(())
}

// --- scoped ------------------------------------------------------------------

async fn scoped(opts: &Opts) -> Res<()> {
    let url = opts.get("url")?.trim_end_matches('/').to_owned();
    let token_file = opts.get("app-token-file")?;
    let token = std::fs::read_to_string(token_file).map_err(|e| format!("{token_file}: {e}"))?;
    let scope = opts.get("scope")?.to_owned();
    let op = opts.get("op")?.to_owned();
    let batch: usize = opts.num("batch", 1)?;
    let requests: usize = opts.num("requests", 20_000)?;
    let deadline = opts
        .flags
        .get("duration")
        .map(|d| Duration::from_secs_f64(d.parse().unwrap_or(10.0)));
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", token.trim());
    headers.insert(
        reqwest::header::AUTHORIZATION,
        bearer
            .parse()
            .map_err(|_| format!("{token_file}: not a token"))?,
    );
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(opts)?)
        .no_proxy()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let field = |i: usize, value: &str| {
        serde_json::json!({ "scope": scope, "table": "bench", "column": "email",
                            "row": format!("r{i}"), "value": value })
    };
    let plain: Vec<String> = (0..batch).map(|i| format!("{i:064}")).collect();
    let items: Vec<serde_json::Value> =
        plain.iter().enumerate().map(|(i, v)| field(i, v)).collect();
    let body = match op.as_str() {
        "encrypt" => serde_json::json!({ "items": items }),
        "decrypt" => {
            let reply = client
                .post(format!("{url}/v1/scoped/encrypt"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap())
                .send()
                .await
                .map_err(|e| format!("sealing the batch: {e}"))?;
            let status = reply.status();
            let bytes = reply.bytes().await.map_err(|e| e.to_string())?;
            let sealed: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
                format!(
                    "sealing the batch: {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?;
            let values = sealed["values"]
                .as_array()
                .ok_or_else(|| format!("sealing the batch: {status}: {sealed}"))?;
            let items: Vec<serde_json::Value> = values
                .iter()
                .enumerate()
                .map(|(i, v)| field(i, v.as_str().unwrap_or_default()))
                .collect();
            serde_json::json!({ "items": items })
        }
        "index" => {
            let items: Vec<serde_json::Value> = plain
                .iter()
                .map(|v| {
                    serde_json::json!({ "scope": scope, "table": "bench", "index": "email",
                        "columns": ["email"], "bits": 64, "normalize": ["trim", "lowercase"],
                        "values": [v] })
                })
                .collect();
            serde_json::json!({ "items": items })
        }
        other => return Err(format!("--op {other}: decrypt, encrypt or index")),
    };
    let path = if op == "index" { "index" } else { op.as_str() };
    let target = format!("{url}/v1/scoped/{path}");
    let bodies = Arc::new(vec![serde_json::to_vec(&body).unwrap(); requests]);
    for c in opts.list("concurrency")? {
        let o = fire(
            &client,
            std::slice::from_ref(&target),
            "application/json",
            bodies.clone(),
            c,
            deadline,
            Arc::new(Default::default()),
            false,
        )
        .await;
        let items_per_s =
            (o.latencies.len() - o.errors) as f64 * batch as f64 / o.elapsed.as_secs_f64();
        let extra = format!("op={op} batch={batch} c={c} items_per_s={items_per_s:.1}");
        println!("{}", report("scoped", &extra, o));
    }
    Ok(())
}
