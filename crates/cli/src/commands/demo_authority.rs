//! The second half of `atrest demo`: a key authority on 127.0.0.1, the
//! vault enrolled with it, reboots unlocked by it (planned, then one held
//! for an approver), the audit log, a revoke and a shred.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use atrest_agent::{AuthoritySpec, StateDir, UnlockOptions};
use atrest_keyd::{AdminClient, AuthorityOptions, DataDir, InitOptions, PendingView, Token};
use atrest_remote::BootId;
use atrest_vault::{LockedVault, Vault};
use serde_json::json;
use zeroize::Zeroizing;

/// Boot ids of the simulated machine's successive boots.
const BOOTS: [&str; 4] = [
    "3f9e2c1a-0000-4000-8000-000000000001",
    "3f9e2c1a-0000-4000-8000-000000000002",
    "3f9e2c1a-0000-4000-8000-000000000003",
    "3f9e2c1a-0000-4000-8000-000000000004",
];

fn options(boot: &str) -> anyhow::Result<UnlockOptions> {
    Ok(UnlockOptions {
        retries: 1,
        timeout: Duration::from_secs(20),
        poll_wait: Duration::from_secs(5),
        boot_id: Some(BootId::new(boot)?),
        ..UnlockOptions::default()
    })
}

/// Runs the story; `read_back` mounts an unlocked vault and returns the
/// first line of its `hello.txt`.
pub fn run(
    tmp: &Path,
    backing: &Path,
    vault: Vault,
    read_back: impl Fn(Vault) -> anyhow::Result<String>,
) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(story(tmp, backing, vault, read_back))
}

async fn story(
    tmp: &Path,
    backing: &Path,
    mut vault: Vault,
    read_back: impl Fn(Vault) -> anyhow::Result<String>,
) -> anyhow::Result<bool> {
    println!("\n== the key authority: the vault opens at boot only if the authority agrees ==");
    let data = tmp.join("keyd");
    let made = DataDir::init(&data, InitOptions::default()).await?;
    let dir = DataDir::open_exclusive(&data)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        atrest_keyd::serve_data_dir(
            &dir,
            Some("127.0.0.1:0"),
            AuthorityOptions::default(),
            async {
                let _ = stop_rx.await;
            },
            |address, _| {
                let _ = ready_tx.send(address);
            },
        )
        .await
    });
    let address = ready_rx.await.context("the demo authority did not start")?;
    let url = format!("https://{address}");
    println!(
        "7. atrest keyd init + serve: listening on {url}\n   CA fingerprint hosts pin: {}",
        made.ca_fingerprint
    );
    let admin = AdminClient::new(
        &url,
        &data.join("tls/ca.pem"),
        DataDir::open(&data)?.admin_token()?,
    )?;

    let token: Token = admin
        .post(
            "/v1/admin/tokens",
            &json!({ "group": "web", "expires_in": 600 }),
        )
        .await?;
    let state = StateDir::new(tmp.join("host-state"));
    let enrolled = atrest_agent::enroll(
        &mut vault,
        &state,
        &[AuthoritySpec {
            url: url.clone(),
            token: Some(Zeroizing::new(token.token)),
            ca_fingerprint: atrest_agent::parse_fingerprint(&made.ca_fingerprint)?,
            replicas: Vec::new(),
        }],
        None,
        "web-1",
        "demo authority",
    )
    .await?;
    drop(vault);
    println!(
        "8. atrest keyd token create --group web; atrest enroll {} --authority {url} ...\n   \
         remote keyslot {} added; the authority never saw the vault key (blinded exchange)",
        backing.display(),
        enrolled.slot_id
    );

    // Boot 1: the first unlock after enrollment.
    let unlocked =
        atrest_agent::unlock(LockedVault::open(backing)?, &state, &options(BOOTS[0])?).await?;
    println!(
        "9. boot 1: atrest unlock {} (no passphrase): opened by the authority, slot {}",
        backing.display(),
        unlocked.slot_id
    );
    drop(unlocked);
    let audit_key = data_dir_audit_key(&data)?;
    if let Some(head) = state.kept_head(&audit_key)? {
        println!(
            "   the grant proved its release is in the audit log; the host keeps the signed\n   \
             tree head (size {}) and will refuse a log that does not extend it",
            head.tree_size
        );
    }

    // A planned reboot: announced, so the next boot is released at once.
    let config = LockedVault::open(backing)?.config().clone();
    atrest_agent::announce_reboot(&config, &state, &options(BOOTS[0])?).await?;
    let unlocked =
        atrest_agent::unlock(LockedVault::open(backing)?, &state, &options(BOOTS[1])?).await?;
    let line = read_back(unlocked.vault)?;
    println!(
        "10. atrest reboot --planned, then boot 2 (new boot id): released at once, mounted,\n    \
         hello.txt reads: {line}"
    );

    // An unannounced reboot: held until a person approves.
    let waiting = {
        let state = state.clone();
        let locked = LockedVault::open(backing)?;
        let options = options(BOOTS[2])?;
        tokio::spawn(async move { atrest_agent::unlock(locked, &state, &options).await })
    };
    let pending = loop {
        let list: Vec<PendingView> = admin.get("/v1/admin/requests").await?;
        if let Some(p) = list.into_iter().next() {
            break p;
        }
        if waiting.is_finished() {
            anyhow::bail!("the unannounced boot was not held for approval");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "11. boot 3, not announced: the authority holds the request\n    \
         atrest keyd requests: {} host {} boot {}: {}",
        pending.id, pending.host_id, pending.boot_id, pending.reason
    );
    let _: PendingView = admin
        .post(
            &format!("/v1/admin/requests/{}/approve", pending.id),
            &json!({ "approver": "alice" }),
        )
        .await?;
    let unlocked = waiting.await??;
    println!(
        "    atrest keyd approve {} --as alice: the waiting host unlocked (slot {})",
        pending.id, unlocked.slot_id
    );
    drop(unlocked);

    // Revoke, then shred.
    let _: serde_json::Value = admin
        .post("/v1/admin/hosts/web-1/revoke", &json!({}))
        .await?;
    let mut quick = options(BOOTS[2])?;
    quick.retries = 0;
    let revoked = atrest_agent::unlock(LockedVault::open(backing)?, &state, &quick).await;
    println!(
        "12. atrest keyd host revoke web-1; unlock: {}",
        revoked
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "OPENED (bug!)".into())
    );
    let _: serde_json::Value = admin
        .post("/v1/admin/hosts/web-1/shred", &json!({}))
        .await?;
    let shredded = atrest_agent::unlock(LockedVault::open(backing)?, &state, &quick).await;
    let refused = shredded.is_err();
    println!(
        "13. atrest keyd host shred web-1 --yes; unlock: {}",
        shredded
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "OPENED (bug!)".into())
    );

    let _ = stop_tx.send(());
    server.await??;
    let data_dir = DataDir::open(&data)?;
    let store = data_dir.audit_store().await?;
    let report = atrest_audit::verify(&store, &data_dir.audit_public_key()?).await;
    println!("14. atrest keyd audit tail: every step is in the hash-chained log");
    use atrest_audit::AuditStore;
    let head = store.head().await?.seq;
    for entry in store
        .read_entries(1, u32::try_from(head).unwrap_or(u32::MAX))
        .await?
    {
        let details = entry.details_value().unwrap_or_default();
        let outcome = details
            .get("outcome")
            .or_else(|| details.get("decision"))
            .or_else(|| details.get("change"))
            .or_else(|| details.get("state"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        println!(
            "    {:>3} {:<16} {:<7} {:<8} {outcome}",
            entry.seq,
            entry.kind.as_str(),
            entry.actor,
            entry.subject.as_deref().unwrap_or("-"),
        );
    }
    let intact = report.is_ok();
    println!(
        "15. atrest keyd audit verify: {}",
        match &report {
            Ok(r) => format!(
                "intact ({} entries, {} signed tree heads)",
                r.head.seq, r.tree_heads
            ),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    Ok(refused && intact)
}

/// The authority's audit key, as hosts keep it (raw bytes).
fn data_dir_audit_key(data: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    Ok(DataDir::open(data)?.audit_public_key()?.to_bytes())
}
