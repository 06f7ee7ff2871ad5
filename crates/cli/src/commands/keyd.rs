//! `atrest keyd ...`: run the key authority, and administer it.
//!
//! `init`, `serve` and `audit` work on the data directory and the
//! database (`--database`) themselves; the rest talk to the running keyd
//! over its local admin socket with the admin token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use atrest_keyd::{
    AdminClient, AuthorityOptions, DataDir, Database, HostView, InitOptions, MAX_TOKEN_LIFETIME,
    MIN_TOKEN_LIFETIME, NewApprover, PendingView, Policy, PolicyRule, PolicyView, Settings, Token,
};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Debug, Args, Clone)]
pub struct DataDirArg {
    /// The authority's data directory.
    #[arg(
        long,
        value_name = "DIR",
        env = "ATREST_KEYD_DIR",
        default_value = "/var/lib/atrest/keyd"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct DatabaseArg {
    /// Where hosts, secrets and the audit log are: postgres://USER@HOST:PORT/DB
    /// (one database that several `keyd serve` replicas share; the password
    /// comes from PGPASSWORD or ~/.pgpass) or sqlite:DIR. Default: the one
    /// given at init (keyd.json), else SQLite files in the data directory.
    #[arg(long, value_name = "URL", env = "ATREST_KEYD_DATABASE", value_parser = parse_database)]
    pub database: Option<Database>,
}

fn parse_database(text: &str) -> Result<Database, String> {
    text.parse()
        .map_err(|e: atrest_keyd::DatabaseError| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Release at once.
    Auto,
    /// Hold for an approver (CLI or web page).
    Approve,
    /// Refuse.
    Deny,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Auto => Policy::Auto,
            PolicyArg::Approve => Policy::Approve,
            PolicyArg::Deny => Policy::Deny,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum KeydCommand {
    /// Create the authority's keys, CA, server certificate and databases.
    Init(InitArgs),
    /// Serve the authority over HTTPS, and to this machine's admin CLI on DIR/admin.sock.
    Serve(ServeArgs),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled hosts: list, show, revoke, reinstate, shred, rotate.
    #[command(subcommand)]
    Host(HostCommand),
    /// Per-group, per-host and default policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List the requests waiting for an approver.
    Requests(ListArgs),
    /// Approve a waiting request.
    Approve(DecideArgs),
    /// Deny a waiting request.
    Deny(DecideArgs),
    /// People who approve on the web page with a TOTP code.
    #[command(subcommand)]
    Approver(ApproverCommand),
    /// Check or read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the CA fingerprint hosts pin (`atrest enroll --ca-fingerprint`).
    Fingerprint {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// The database's state, read-only: kind and reachability, schema
    /// version, audit chain head, standby and replay lag, hosts by state.
    /// Exits non-zero when the database cannot be read.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        database: DatabaseArg,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Where `serve` listens.
    #[arg(long, default_value = "127.0.0.1:7443", value_name = "ADDR:PORT")]
    pub listen: String,
    /// DNS names and IP addresses hosts use to reach this authority (put in
    /// the generated certificate). Repeat for several.
    #[arg(long = "name", value_name = "NAME", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub names: Vec<String>,
    /// Use this server certificate chain (PEM) instead of generating a CA.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The CA hosts pin, with --cert (default: the last certificate of the chain).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub ca: Option<PathBuf>,
    /// Default policy for hosts with no group or host policy.
    #[arg(long, value_enum, default_value = "auto")]
    pub policy: PolicyArg,
    /// What an unaccounted reboot (a new boot id without
    /// `atrest reboot --planned`) escalates to.
    #[arg(long, value_enum, default_value = "approve")]
    pub unannounced_reboot: PolicyArg,
    /// What an unlock of a format 2 vault older than (or forked from) the
    /// generation this authority witnessed escalates to: a disk put back
    /// to an earlier copy.
    #[arg(long, value_enum, default_value = "approve")]
    pub rollback: PolicyArg,
    /// Seconds a held request waits for an approver; then it is denied.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub approval_timeout: u64,
    /// POST a JSON notice here when a request is held (chat, paging).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// The URL approvers open (for the link in the webhook notice).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve the admin API for this machine's CLI on this Unix socket
    /// (mode 0600) instead of DIR/admin.sock, e.g. under /run.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Listen here instead of the address given at init.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TokenCommand {
    /// Make a one-time enrollment token (printed once).
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// The group the enrolled host joins (its policy applies).
        #[arg(long, default_value = "default")]
        group: String,
        /// How long the token stays valid: 60s to 7d (90s, 30m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = parse_token_lifetime)]
        expires: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum HostCommand {
    /// List enrolled hosts.
    List(ListArgs),
    /// Show one host.
    Show(HostArgs),
    /// Refuse a host from now on (reversible with `reinstate`).
    Revoke(HostArgs),
    /// Undo a revoke.
    Reinstate(HostArgs),
    /// Destroy a host's secrets: its vaults' remote keyslots never open again.
    Shred {
        #[command(flatten)]
        host: HostArgs,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Give a host a new exchange secret; its keyslots re-bind on their next unlock.
    Rotate(HostArgs),
}

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    pub host: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Set the policy of a group, a host, or the default.
    Set {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, group = "scope")]
        group: Option<String>,
        #[arg(long, group = "scope")]
        host: Option<String>,
        #[arg(long, group = "scope")]
        default: bool,
        #[arg(value_enum)]
        policy: PolicyArg,
        /// What an unaccounted reboot escalates to for this scope.
        #[arg(long, value_enum, default_value = "approve")]
        unannounced_reboot: PolicyArg,
        /// What an unlock of a vault older than (or forked from) the
        /// generation this authority witnessed escalates to.
        #[arg(long, value_enum, default_value = "approve")]
        rollback: PolicyArg,
    },
    /// List the policies.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The request id (from `atrest keyd requests`).
    pub request: String,
    /// Who decides, for the audit log.
    #[arg(
        long = "as",
        value_name = "NAME",
        env = "SUDO_USER",
        default_value = "root"
    )]
    pub approver: String,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ApproverCommand {
    /// Add an approver (or give one a new TOTP secret); prints the secret once.
    Add {
        #[command(flatten)]
        dir: DataDirArg,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AuditCommand {
    /// Check every entry's hash, the chain and the signed checkpoints.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Print the last entries.
    Tail {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        database: DatabaseArg,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and s, m, h or d (e.g. 1h)"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(factor)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?}: must be positive and reasonable"))
}

/// A token lifetime keyd accepts, refused here before anything is sent.
fn parse_token_lifetime(text: &str) -> Result<u64, String> {
    let seconds = parse_duration(text)?;
    if (MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "{text:?}: a token lasts from 60s to 7d; make one per enrollment, \
             with an expiry just longer than the enrollment takes"
        ))
    }
}

#[allow(clippy::disallowed_methods, reason = "this is the CLI's clock")]
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-12-05T09:10:14Z`, in UTC whatever the machine's zone, so lines
/// from several machines compare; the raw number if out of range.
pub(crate) fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `in 59 min`, `3 h ago`: rounded down to the largest unit.
fn relative(unix: u64, now: u64) -> String {
    let distance = unix.abs_diff(now);
    let amount = match distance {
        0 => return "now".to_owned(),
        d if d < 60 => format!("{d} s"),
        d if d < 3600 => format!("{} min", d / 60),
        d if d < 2 * 86_400 => format!("{} h", d / 3600),
        d => format!("{} d", d / 86_400),
    };
    if unix > now {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A time for people: RFC 3339 UTC and how far from now (`--json` keeps
/// the Unix seconds).
fn when(unix: u64, now: u64) -> String {
    format!("{} ({})", rfc3339(unix), relative(unix, now))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(command: KeydCommand) -> anyhow::Result<ExitCode> {
    // Databases and keys the authority writes are for root's eyes only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let rt = runtime()?;
    rt.block_on(run_async(command))
}

async fn run_async(command: KeydCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeydCommand::Init(args) => init(args).await,
        KeydCommand::Serve(args) => serve(args).await,
        KeydCommand::Token(TokenCommand::Create {
            dir,
            group,
            expires,
            json,
        }) => {
            let token: Token = client(&dir)?
                .post(
                    "/v1/admin/tokens",
                    &json!({ "group": group, "expires_in": expires }),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string(&token)?);
            } else {
                println!("{}", token.token);
                eprintln!(
                    "one-time token for group {:?}, valid until {}",
                    token.group,
                    when(token.expires_at, unix_now())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Host(command) => host(command).await,
        KeydCommand::Policy(PolicyCommand::Set {
            dir,
            group,
            host,
            default,
            policy,
            unannounced_reboot,
            rollback,
        }) => {
            let (scope, name) = match (group, host, default) {
                (Some(g), _, _) => ("group", Some(g)),
                (_, Some(h), _) => ("host", Some(h)),
                (_, _, true) => ("default", None),
                _ => anyhow::bail!("say which policy: --group NAME, --host NAME or --default"),
            };
            let view: PolicyView = client(&dir)?
                .put(
                    "/v1/admin/policy",
                    &json!({
                        "scope": scope,
                        "name": name,
                        "policy": Policy::from(policy),
                        "unannounced_reboot": Policy::from(unannounced_reboot),
                        "rollback": Policy::from(rollback),
                    }),
                )
                .await?;
            print_policy(&view);
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Policy(PolicyCommand::List(args)) => {
            let views: Vec<PolicyView> = client(&args.dir)?.get("/v1/admin/policy").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                views.iter().for_each(print_policy);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Requests(args) => {
            let pending: Vec<PendingView> = client(&args.dir)?.get("/v1/admin/requests").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&pending)?);
            } else if pending.is_empty() {
                println!("no requests are waiting");
            } else {
                let now = unix_now();
                for p in &pending {
                    println!(
                        "{}  host {} (group {}) boot {} ({}) from {}\n    made {}, expires {}\n    {}",
                        p.id,
                        p.host_id,
                        p.group,
                        p.boot_id,
                        p.boot,
                        p.source,
                        when(p.created_at, now),
                        when(p.expires_at, now),
                        p.reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Approve(args) => decide(args, "approve").await,
        KeydCommand::Deny(args) => decide(args, "deny").await,
        KeydCommand::Approver(ApproverCommand::Add { dir, name }) => {
            let approver: NewApprover = client(&dir)?
                .post("/v1/admin/approvers", &json!({ "name": name }))
                .await?;
            println!("approver:    {}", approver.name);
            println!("TOTP secret: {}", approver.secret);
            println!("otpauth URI: {}", approver.otpauth_uri);
            eprintln!(
                "add the secret to an authenticator app now; it is not shown again. \
                 The approval page is /approve on this keyd."
            );
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Fingerprint { dir } => {
            let data = DataDir::open(&dir.data_dir)?;
            println!("{}", data.certificates()?.ca_fingerprint());
            Ok(ExitCode::SUCCESS)
        }
        KeydCommand::Status {
            dir,
            database,
            json,
        } => status(&dir.data_dir, database.database, json).await,
        KeydCommand::Audit(AuditCommand::Verify { dir, database }) => {
            audit_verify(&dir.data_dir, database.database).await
        }
        KeydCommand::Audit(AuditCommand::Tail {
            dir,
            database,
            lines,
            json,
        }) => audit_tail(&dir.data_dir, database.database, lines, json).await,
    }
}

/// The admin client of the keyd serving `dir` on this machine.
pub(crate) fn client(dir: &DataDirArg) -> anyhow::Result<AdminClient> {
    let data = DataDir::open(&dir.data_dir)?;
    Ok(AdminClient::for_data_dir(&data)?)
}

fn print_policy(view: &PolicyView) {
    println!(
        "{:<24} {:<8} unannounced reboot: {:<8} rollback: {}",
        view.scope_text(),
        view.rule.policy.as_str(),
        view.rule.unannounced_reboot.as_str(),
        view.rule.rollback.as_str()
    );
}

async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings {
        listen: args.listen,
        names: args.names,
        approval_timeout: args.approval_timeout,
        webhook: args.webhook,
        public_url: args.public_url,
        admin_socket: args.admin_socket,
        ..Settings::default()
    };
    let certificates = args.cert.zip(args.key).map(|(c, k)| (c, k, args.ca));
    let made = DataDir::init(
        &args.dir.data_dir,
        InitOptions {
            settings,
            certificates,
            default_rule: PolicyRule {
                policy: args.policy.into(),
                unannounced_reboot: args.unannounced_reboot.into(),
                rollback: args.rollback.into(),
            },
            database: args.database.database,
        },
    )
    .await?;
    println!("{}", made.ca_fingerprint);
    eprintln!(
        "keyd initialized in {}. Hosts pin the CA fingerprint above \
         (`atrest enroll ... --ca-fingerprint {}`); the admin token is in {}. \
         Next: `atrest keyd serve --data-dir {}`",
        args.dir.data_dir.display(),
        made.ca_fingerprint,
        made.admin_token_file.display(),
        args.dir.data_dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // The process holds every host secret.
    crate::hygiene::harden()?;
    crate::hygiene::lock_memory();
    let dir = DataDir::open_exclusive(&args.dir.data_dir)?.with_database(args.database.database);
    let settings = dir.settings()?;
    let options = AuthorityOptions {
        approval_timeout: settings.approval_timeout,
        planned_reboot_window: settings.planned_reboot_window,
        max_skew: settings.max_skew,
        max_file_streams_per_app: settings
            .max_file_streams_per_app
            .unwrap_or(atrest_keyd::DEFAULT_FILE_STREAMS_PER_APP),
        on_pending: settings
            .webhook
            .clone()
            .map(|url| atrest_keyd::webhook_notifier(url, settings.public_url.clone()))
            .transpose()
            .context("the webhook URL in keyd.json")?,
        ..AuthorityOptions::default()
    };
    // Registered before the "listening" line, so a SIGTERM right after it
    // is a clean stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("atrest keyd: stopping");
    };
    atrest_keyd::serve_data_dir(
        &dir,
        args.listen.as_deref(),
        options,
        shutdown,
        |address, fingerprint| {
            // One line scripts and systemd can wait for.
            println!("listening on https://{address} (CA {fingerprint})");
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn host(command: HostCommand) -> anyhow::Result<ExitCode> {
    let (args, action) = match command {
        HostCommand::List(args) => {
            let hosts: Vec<HostView> = client(&args.dir)?.get("/v1/admin/hosts").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
            } else if hosts.is_empty() {
                println!("no hosts are enrolled; make a token with `atrest keyd token create`");
            } else {
                println!(
                    "{:<24} {:<12} {:<9} {:<38} LAST UNLOCK",
                    "HOST", "GROUP", "STATE", "LAST BOOT"
                );
                let now = unix_now();
                for h in &hosts {
                    println!(
                        "{:<24} {:<12} {:<9} {:<38} {}",
                        h.record.id,
                        h.record.group,
                        h.record.state.as_str(),
                        h.boot.last_boot_id.as_deref().unwrap_or("-"),
                        h.boot
                            .last_unlock_at
                            .map_or_else(|| "-".to_owned(), |t| when(t, now)),
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        HostCommand::Show(args) => (args, None),
        HostCommand::Revoke(args) => (args, Some("revoke")),
        HostCommand::Reinstate(args) => (args, Some("reinstate")),
        HostCommand::Rotate(args) => (args, Some("rotate")),
        HostCommand::Shred { host, yes } => {
            anyhow::ensure!(
                yes,
                "shredding {} destroys its secrets for good: its vaults' remote keyslots can \
                 never open again. Add --yes to do it.",
                host.host
            );
            (host, Some("shred"))
        }
    };
    atrest_remote::HostId::new(args.host.as_str())
        .map_err(|e| anyhow::anyhow!("{:?} is not a host name: {e}", args.host))?;
    let client = client(&args.dir)?;
    let view: HostView = match action {
        None => {
            client
                .get(&format!("/v1/admin/hosts/{}", args.host))
                .await?
        }
        Some(action) => {
            client
                .post(
                    &format!("/v1/admin/hosts/{}/{action}", args.host),
                    &json!({}),
                )
                .await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("host:        {}", view.record.id);
        println!("group:       {}", view.record.group);
        println!("state:       {}", view.record.state.as_str());
        println!("public key:  {}", view.record.public_key);
        println!("key id:      {}", view.record.key_id);
        if let Some(previous) = view.record.previous_key_id {
            println!("previous key id: {previous} (until the host re-binds)");
        }
        let now = unix_now();
        println!("enrolled:    {}", when(view.record.enrolled_at, now));
        if let Some(boot) = &view.boot.last_boot_id {
            println!("last boot:   {boot}");
        }
        if let Some(at) = view.boot.last_unlock_at {
            println!("last unlock: {}", when(at, now));
        }
        if let Some(until) = view.boot.planned_until {
            println!("planned reboot accounted for until {}", when(until, now));
        }
    }
    if action == Some("shred") {
        // On stderr, so `--json` output stays one document.
        eprintln!(
            "take a new backup of the key authority's database now: the shred moved \
             secrets.key to a new epoch, and no backup taken before it can be restored \
             (docs/operations.md, \"Shred and backups\")"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Request ids and host names go into URL paths: only their own forms.
fn check_request_id(id: &str) -> anyhow::Result<()> {
    let body = id.strip_prefix("req_").unwrap_or("");
    anyhow::ensure!(
        !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id:?} is not a request id (req_ and base64url, from `atrest keyd requests`)"
    );
    Ok(())
}

async fn decide(args: DecideArgs, action: &str) -> anyhow::Result<ExitCode> {
    check_request_id(&args.request)?;
    let view: PendingView = client(&args.dir)?
        .post(
            &format!("/v1/admin/requests/{}/{action}", args.request),
            &json!({ "approver": args.approver }),
        )
        .await?;
    println!(
        "request {} of host {}: {}",
        view.id,
        view.host_id,
        view.state.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(dir: &Path, database: Option<Database>, json: bool) -> anyhow::Result<ExitCode> {
    let data = DataDir::open(dir)?.with_database(database);
    let report = atrest_keyd::database_status(&data.database()?).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let now = unix_now();
        println!("database        {} ({})", report.database, report.kind);
        println!(
            "reachable       {}",
            if report.reachable { "yes" } else { "no" }
        );
        if let Some(v) = report.schema_version {
            println!("schema version  {v}");
        }
        if let Some(standby) = report.standby {
            match (standby, report.replay_lag_seconds) {
                (false, _) => println!("standby         no (primary)"),
                (true, Some(lag)) => println!("standby         yes, replay lag {lag:.1} s"),
                (true, None) => println!("standby         yes, nothing replayed yet"),
            }
        }
        match (report.audit_entries, report.audit_last_ms) {
            (Some(n), Some(ms)) => {
                println!("audit chain     {n} entries, last {}", when(ms / 1000, now))
            }
            (Some(n), None) => println!("audit chain     {n} entries"),
            _ => {}
        }
        if report.reachable && report.error.is_none() {
            let hosts: Vec<String> = ["active", "revoked", "shredded"]
                .iter()
                .map(|s| format!("{} {s}", report.hosts.get(*s).copied().unwrap_or(0)))
                .collect();
            println!("hosts           {}", hosts.join(", "));
        }
    }
    match &report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            eprintln!(
                "atrest: cannot read the key authority's database {}: {e}; check that it runs \
                 and that --database (or keyd.json's) names it",
                report.database
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn audit_verify(dir: &Path, database: Option<Database>) -> anyhow::Result<ExitCode> {
    let data = DataDir::open(dir)?.with_database(database);
    let store = data.audit_store().await?;
    let key = data.audit_public_key()?;
    match atrest_audit::verify(&store, &key).await {
        Ok(report) => {
            println!(
                "audit log intact: {} entries, {} signed checkpoints, {} entries after the latest checkpoint",
                report.head.seq, report.checkpoints, report.unsealed
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("atrest: the audit log does not verify: {e}");
            Ok(ExitCode::from(crate::EXIT_CORRUPT))
        }
    }
}

async fn audit_tail(
    dir: &Path,
    database: Option<Database>,
    lines: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use atrest_audit::AuditStore;
    let data = DataDir::open(dir)?.with_database(database);
    let store = data.audit_store().await?;
    let head = store.head().await?.seq;
    let from = head.saturating_sub(lines.saturating_sub(1)).max(1);
    let count = u32::try_from(head.saturating_sub(from) + 1).unwrap_or(u32::MAX);
    let entries = if head == 0 {
        Vec::new()
    } else {
        store.read_entries(from, count).await?
    };
    for entry in &entries {
        if json {
            println!("{}", serde_json::to_string(entry)?);
        } else {
            println!(
                "{:>6} {} {:<16} {:<12} {:<20} {}",
                entry.seq,
                rfc3339(entry.timestamp_ms / 1000),
                entry.kind.as_str(),
                entry.actor,
                entry.subject.as_deref().unwrap_or("-"),
                entry.details
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_outside_a_minute_to_a_week_are_refused() {
        for refused in [
            "0",
            "59s",
            "59",
            "604801",
            "7d1",
            "8d",
            "1000000000000",
            "213503982334601d",
        ] {
            let error = parse_token_lifetime(refused).unwrap_err();
            assert!(error.contains(refused), "{error}");
        }
        assert_eq!(parse_token_lifetime("60s"), Ok(60));
        assert_eq!(parse_token_lifetime("1m"), Ok(60));
        assert_eq!(parse_token_lifetime("7d"), Ok(7 * 86_400));
        assert_eq!(parse_token_lifetime("604800"), Ok(604_800));
    }

    #[test]
    fn times_read_as_utc_and_distance_from_now() {
        let now = 1_796_461_814; // 2026-12-05T09:10:14Z
        assert_eq!(rfc3339(now), "2026-12-05T09:10:14Z");
        assert_eq!(when(now + 3599, now), "2026-12-05T10:10:13Z (in 59 min)");
        assert_eq!(when(now - 3 * 3600, now), "2026-12-05T06:10:14Z (3 h ago)");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now + 45, now), "in 45 s");
        assert_eq!(relative(now - 3 * 86_400, now), "3 d ago");
        assert_eq!(rfc3339(u64::MAX), u64::MAX.to_string());
    }
}
