//! `atrest scope ...` and `atrest app ...`: the scoped-encryption side of
//! the key authority (issue 12), administered like `atrest keyd host ...`:
//! over the running keyd's local admin socket with its admin token.

use std::process::ExitCode;

use atrest_keyd::{AppView, CreatedScope, NewApp, Removed, ScopeView, WindowView};
use clap::{Args, Subcommand};
use serde_json::json;

use super::keyd::{DataDirArg, ListArgs, client as admin_client, runtime};

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ScopeCommand {
    /// Create a scope (a user, a company, a group) with its first key.
    Create {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The scope's key also needs a share only the client holds (a
        /// cookie): printed once, never kept by the authority.
        #[arg(long)]
        client_share: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List scopes.
    List(ListArgs),
    /// Show one scope.
    Show {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Add a key version that seals from now on (older ones still open).
    Rotate {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Refuse versions below this from now on (after the data was
        /// rewrapped), instead of adding a version.
        #[arg(long, value_name = "VERSION")]
        minimum: Option<u32>,
    },
    /// Destroy every key of a scope: its data, and every copy of it in
    /// backups, never decrypts again.
    Shred {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Daily windows: when a batch job may decrypt fields of a scope
    /// made without a client share.
    #[command(subcommand)]
    Window(WindowCommand),
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum WindowCommand {
    /// Set the scope's window (times in UTC; an end before the start runs
    /// over midnight).
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// HH:MM, UTC.
        #[arg(long)]
        start: String,
        /// HH:MM, UTC.
        #[arg(long)]
        end: String,
        /// The fields it opens, table.column (repeat or comma-separate).
        #[arg(long = "field", value_delimiter = ',', required = true)]
        fields: Vec<String>,
    },
    /// Remove the window: the scope opens at any time again.
    Clear {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(Debug, Args)]
pub struct ScopeArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The scope id (`user:42`, `org:acme`).
    pub scope: String,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AppCommand {
    /// Add an application and print its token (shown once).
    Add {
        #[command(flatten)]
        dir: DataDirArg,
        /// 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        /// Scopes it may use: a name or a prefix ending in `*` (repeat or
        /// comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Fields it may use: table.column, table.* or * (repeat or
        /// comma-separate).
        #[arg(long = "field", value_delimiter = ',', required = true)]
        fields: Vec<String>,
        /// It may create scopes its policy names (a sign-up).
        #[arg(long)]
        create_scopes: bool,
        /// What it may do (repeat or comma-separate): encrypt, decrypt,
        /// rewrap, index, datakey; a file's sealing is encrypt, its opening
        /// decrypt. Default: all five.
        #[arg(long = "operation", value_delimiter = ',',
              value_parser = ["encrypt", "decrypt", "rewrap", "index", "datakey"])]
        operations: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List applications (never their tokens).
    List(ListArgs),
    /// Remove an application: its token is refused from now on.
    Remove {
        #[command(flatten)]
        dir: DataDirArg,
        name: String,
    },
}

/// A query value, percent-encoded (scope ids may hold any printable text).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_scope(view: &ScopeView) {
    let versions: Vec<String> = view.versions.iter().map(u32::to_string).collect();
    let state = if view.shredded { "shredded" } else { "active" };
    println!(
        "{:<32} {:<9} share: {:<4} versions: {:<8} minimum: {}{}",
        view.scope,
        state,
        if view.client_share { "yes" } else { "no" },
        if versions.is_empty() {
            "-".to_owned()
        } else {
            versions.join(",")
        },
        view.minimum_version,
        view.window
            .as_ref()
            .map(|w| format!(" window: {}-{} UTC {}", w.start, w.end, w.fields.join(",")))
            .unwrap_or_default()
    );
}

pub fn run_scope(command: ScopeCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(scope(command))
}

pub fn run_app(command: AppCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(app(command))
}

async fn scope(command: ScopeCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScopeCommand::Create {
            scope,
            client_share,
            json,
        } => {
            let created: CreatedScope = admin_client(&scope.dir)?
                .post(
                    "/v1/admin/scopes",
                    &json!({ "scope": scope.scope, "client_share": client_share }),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                print_scope(&created.scope);
                if let Some(share) = &created.client_share_secret {
                    println!(
                        "client share (give it to the client; it is not kept): {}",
                        share.as_str()
                    );
                }
            }
        }
        ScopeCommand::List(args) => {
            let scopes: Vec<ScopeView> = admin_client(&args.dir)?.get("/v1/admin/scopes").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&scopes)?);
            } else if scopes.is_empty() {
                println!("no scopes yet; create one with `atrest scope create SCOPE`");
            } else {
                scopes.iter().for_each(print_scope);
            }
        }
        ScopeCommand::Show { scope, json } => {
            let view: ScopeView = admin_client(&scope.dir)?
                .get(&format!("/v1/admin/scope?id={}", encode(&scope.scope)))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_scope(&view);
            }
        }
        ScopeCommand::Rotate { scope, minimum } => {
            let client = admin_client(&scope.dir)?;
            let view: ScopeView = match minimum {
                Some(minimum) => {
                    client
                        .post(
                            "/v1/admin/scope/minimum",
                            &json!({ "scope": scope.scope, "minimum_version": minimum }),
                        )
                        .await?
                }
                None => {
                    client
                        .post("/v1/admin/scope/rotate", &json!({ "scope": scope.scope }))
                        .await?
                }
            };
            print_scope(&view);
        }
        ScopeCommand::Shred { scope, yes } => {
            anyhow::ensure!(
                yes,
                "shredding {} destroys its keys for good: its data, and every copy of it, can \
                 never be decrypted again. Add --yes to do it.",
                scope.scope
            );
            let view: ScopeView = admin_client(&scope.dir)?
                .post("/v1/admin/scope/shred", &json!({ "scope": scope.scope }))
                .await?;
            print_scope(&view);
            eprintln!(
                "take a new backup of the key authority's database now: the shred moved \
                 records.key to a new epoch, and no backup taken before it can be restored \
                 (docs/operations.md §12)"
            );
        }
        ScopeCommand::Window(WindowCommand::Set {
            scope,
            start,
            end,
            fields,
        }) => {
            let window = WindowView { start, end, fields };
            let view: ScopeView = admin_client(&scope.dir)?
                .put(
                    "/v1/admin/scope/window",
                    &json!({ "scope": scope.scope, "window": window }),
                )
                .await?;
            print_scope(&view);
        }
        ScopeCommand::Window(WindowCommand::Clear { scope }) => {
            let view: ScopeView = admin_client(&scope.dir)?
                .put(
                    "/v1/admin/scope/window",
                    &json!({ "scope": scope.scope, "window": null }),
                )
                .await?;
            print_scope(&view);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn app(command: AppCommand) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Add {
            dir,
            name,
            scopes,
            fields,
            create_scopes,
            operations,
            json,
        } => {
            let mut body = json!({
                "name": name, "scopes": scopes, "fields": fields,
                "create_scopes": create_scopes
            });
            if !operations.is_empty() {
                body["operations"] = json!(operations);
            }
            let app: NewApp = admin_client(&dir)?.post("/v1/admin/apps", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&app)?);
            } else {
                println!(
                    "app {} added; its token (shown once, keep it in the app's secrets):",
                    app.app.name
                );
                println!("{}", app.token.as_str());
            }
        }
        AppCommand::List(args) => {
            let apps: Vec<AppView> = admin_client(&args.dir)?.get("/v1/admin/apps").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else if apps.is_empty() {
                println!("no apps yet; add one with `atrest app add NAME --scope ... --field ...`");
            } else {
                for app in &apps {
                    let operations: Vec<&str> =
                        app.policy.operations.iter().map(|o| o.as_str()).collect();
                    println!(
                        "{:<24} scopes: {}  fields: {}  operations: {}{}",
                        app.name,
                        app.policy.scopes.join(","),
                        app.policy.fields.join(","),
                        operations.join(","),
                        if app.policy.create_scopes {
                            "  (creates scopes)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        AppCommand::Remove { dir, name } => {
            let removed: Removed = admin_client(&dir)?
                .delete(&format!("/v1/admin/apps/{}", encode(&name)))
                .await?;
            println!(
                "app {} removed: its token is refused from now on",
                removed.removed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("user:42"), "user%3A42");
        assert_eq!(encode("a b&c=d#e"), "a%20b%26c%3Dd%23e");
        assert_eq!(encode("plain-id_1.x~"), "plain-id_1.x~");
    }
}
