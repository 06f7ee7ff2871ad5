//! The last generation of a command that changes a format 2 vault
//! offline (`atrest migrate`, `atrest fsck --repair`), reported to the
//! vault's key authorities (docs/format.md §16.17.1).

use atrest_remote::ReportReason;
use atrest_vault::{DurableGeneration, Vault, VaultError};

/// Reports `generation`, the vault's last durable checkpoint, with
/// `reason` to the key authorities of its remote and threshold slots, as
/// an unmount reports its last: waited for about 15 s at most, and sent
/// only from a boot an authority released a key to (its ticket). Each
/// acceptance is then logged as acknowledged (`WITNESSED`) in the vault's
/// log, so that the vault's next mounts descend from it however long the
/// authority is away. The vault's change is done already: a report that
/// fails is a warning (the next mount reports with reason 1).
pub(super) fn report_last(vault: &Vault, generation: DurableGeneration, reason: ReportReason) {
    let state = atrest_agent::StateDir::from_env();
    let reporter = match atrest_agent::Reporter::start(
        vault.config(),
        state,
        atrest_agent::REPORT_INTERVAL,
    ) {
        Ok(Some(reporter)) => reporter,
        Ok(None) => return,
        Err(e) => {
            eprintln!(
                "atrest: warning: not reported to this vault's key authorities: {e}; its next mount reports"
            );
            return;
        }
    };
    reporter.finish(generation, reason);
    let acknowledged = reporter.take_acknowledged();
    if acknowledged.is_empty() {
        return;
    }
    let logged = vault.open_format_2().and_then(|mut contents| {
        for acknowledgement in &acknowledged {
            acknowledgement.record(&mut contents.store)?;
        }
        contents.store.sync().map_err(VaultError::Metadata)
    });
    if let Err(e) = logged {
        eprintln!(
            "atrest: warning: the key authority's acknowledgement was not logged in the vault: {e}"
        );
    }
}
