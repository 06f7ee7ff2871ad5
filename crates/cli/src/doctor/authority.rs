//! The key authorities of the vaults' remote keyslots: whether each answers
//! with the CA the keyslot pinned, and how they accounted for this host's
//! boots.

use atrest_agent::{Probe, ReleasedBoot, format_fingerprint};

use super::facts::{AuthorityFact, Facts, PROBE_TIMEOUT};
use super::{Finding, Severity};

pub fn check(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in &f.authorities {
        reachable(a, &mut out);
    }
    boots(f, &mut out);
    out
}

/// "keyslot 2" or "keyslot 2, one of the 3 authorities it needs 2 of".
fn slot_name(a: &AuthorityFact) -> String {
    match a.threshold {
        None => format!("keyslot {}", a.slot),
        Some((k, n)) => format!(
            "keyslot {}, one of the {n} authorities it needs {k} of",
            a.slot
        ),
    }
}

fn reachable(a: &AuthorityFact, out: &mut Vec<Finding>) {
    let (vault, url, slot) = (a.vault.display(), &a.url, slot_name(a));
    let unlock_otherwise = format!(
        "until then, unlock with another keyslot: atrest unlock {vault} --passphrase-file FILE (or --recovery-key-file)"
    );
    match &a.probe {
        Probe::Reachable { audit_key: None } => {}
        Probe::Reachable {
            audit_key: Some(key),
        } => {
            if *key != a.pinned_audit_key {
                let (now, pinned) = (audit_key_text(key), audit_key_text(&a.pinned_audit_key));
                out.push(Finding {
                    id: "remote-keyslot-audit-key-changed",
                    severity: Severity::Critical,
                    found: format!(
                        "the key authority {url} of {vault} ({slot}) names the audit key {now}, but the keyslot pinned {pinned} at enrollment"
                    ),
                    why: "its audit log is no longer the one this host checks: unlock refuses its checkpoints, and releases \
                          logged under the old key can no longer be proven to the host"
                        .into(),
                    fix: format!(
                        "on the authority, find out why its audit key changed (a data dir initialised again, or restored \
                         from another authority). If on purpose, re-enroll: atrest enroll {vault} --authority {url} \
                         --ca-fingerprint {} --token TOKEN (TOKEN from `atrest keyd token create` there), then \
                         atrest keyslot remove {vault} {}; if not, enroll nothing against it and treat the authority as compromised",
                        format_fingerprint(&a.pinned),
                        a.slot
                    ),
                });
            }
        }
        Probe::Unreachable { reason } => out.push(Finding {
            id: "remote-keyslot-unreachable",
            severity: Severity::Warning,
            found: format!(
                "the key authority {url} of {vault} ({slot}) did not answer (waited up to {} s): {reason}",
                PROBE_TIMEOUT.as_secs()
            ),
            why: "an unattended boot cannot unlock this vault through it, and stays locked".into(),
            fix: format!(
                "start the authority (on it: systemctl start atrest-keyd) or restore this host's route to it \
                 (firewall, DNS; curl -sk {url}/healthz must answer); {unlock_otherwise}"
            ),
        }),
        Probe::TlsFailure { reason } => out.push(Finding {
            id: "remote-keyslot-unreachable",
            severity: Severity::Warning,
            found: format!(
                "the key authority {url} of {vault} ({slot}) answered, but its TLS handshake failed: {reason}"
            ),
            why: "unlock refuses a server whose certificate does not verify, so this vault does not unlock through it".into(),
            fix: format!(
                "check the authority's server certificate (expiry, and that it names the host in {url}: \
                 atrest keyd init --name); {unlock_otherwise}"
            ),
        }),
        Probe::CaChanged { presented } => {
            let pinned = format_fingerprint(&a.pinned);
            // The chain's last certificate is its CA.
            let shown = presented
                .last()
                .map(format_fingerprint)
                .unwrap_or_else(|| "no certificate".into());
            out.push(Finding {
                id: "remote-keyslot-ca-changed",
                severity: Severity::Critical,
                found: format!(
                    "the key authority {url} of {vault} ({slot}) presents the CA {shown}, but the keyslot pins {pinned}"
                ),
                why: "either the authority's CA was replaced, or another server answers at its address; \
                      unlock refuses it, and a server posing as the authority learns when this host boots"
                    .into(),
                fix: format!(
                    "on the authority, run `atrest keyd fingerprint`. If it prints {shown}, re-enroll with the new pin: \
                     atrest enroll {vault} --authority {url} --ca-fingerprint {shown} --token TOKEN \
                     (TOKEN from `atrest keyd token create` there), then atrest keyslot remove {vault} {}; \
                     if it does not, something else answers at {url}: enroll nothing against it and find out what",
                    a.slot
                ),
            });
        }
    }
}

/// An audit public key as the authority writes it (base64url).
fn audit_key_text(key: &[u8; 32]) -> String {
    atrest_audit::AuditPublicKey::from_bytes(key)
        .map(|k| k.to_string())
        .unwrap_or_else(|_| format!("(invalid) {}", atrest_core::to_base64url(key)))
}

fn describe(b: &ReleasedBoot) -> String {
    let when = crate::commands::keyd::rfc3339(b.timestamp_ms / 1000);
    let how = match &b.approved_by {
        Some(who) => format!("approved by {who}"),
        None => "released by policy".into(),
    };
    let what = if b.boot == "unproven" {
        "the boot id of the last release without its boot ticket (a copy of this disk, or /run lost)"
    } else {
        "an unannounced reboot"
    };
    format!(
        "boot {} released by {} as {what} ({how}, audit entry {} at {when}, host {})",
        b.boot_id, b.url, b.seq, b.host_id
    )
}

fn boots(f: &Facts, out: &mut Vec<Finding>) {
    let state = f.host_state.display();
    let look = |b: &ReleasedBoot| {
        format!(
            "on the authority {}: atrest keyd audit tail -n 200 | grep {}, and atrest keyd host show {}",
            b.url, b.host_id, b.host_id
        )
    };
    let (current, earlier): (Vec<&ReleasedBoot>, Vec<&ReleasedBoot>) = f
        .released_boots
        .iter()
        .filter(|b| b.is_unaccounted())
        .partition(|b| f.boot_id.as_deref() == Some(b.boot_id.as_str()));
    for b in current {
        out.push(Finding {
            id: "unaccounted-reboots",
            severity: Severity::Warning,
            found: format!("this boot: {}", describe(b)),
            why: "nobody announced this reboot: a provider restart, a crash, or a copy of this server \
                  that got the keys the same way; find out which"
                .into(),
            fix: format!(
                "check the authority's log for other boots of this host ({}); announce planned reboots \
                 (atrest reboot --planned, or enable atrest-reboot-planned.service) so that the next boot counts as planned",
                look(b)
            ),
        });
    }
    if let Some(last) = earlier.last() {
        out.push(Finding {
            id: "unaccounted-reboots",
            severity: Severity::Info,
            found: format!(
                "{} earlier boot(s) of this host were unaccounted reboots; the last: {}",
                earlier.len(),
                describe(last)
            ),
            why: "each was a boot nobody announced; each got a vault key".into(),
            fix: format!(
                "check them in the authority's log ({}); this host keeps the last {} boots per authority in {state}/boots",
                look(last),
                atrest_agent::KEPT_BOOTS
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testutil::plain;
    use super::*;

    fn authority(probe: Probe) -> AuthorityFact {
        AuthorityFact {
            vault: PathBuf::from("/srv/data.enc"),
            slot: 2,
            threshold: None,
            url: "https://keys.example:7443".into(),
            pinned: [0xaa; 32],
            pinned_audit_key: audit_key(1),
            probe,
        }
    }

    fn audit_key(seed: u8) -> [u8; 32] {
        atrest_audit::AuditSigningKey::from_seed(&[seed; 32])
            .public_key()
            .to_bytes()
    }

    fn ids(f: &Facts) -> Vec<(&'static str, Severity)> {
        check(f).into_iter().map(|x| (x.id, x.severity)).collect()
    }

    #[test]
    fn a_reachable_authority_with_its_pin_is_fine_else_warned_or_critical() {
        let mut f = plain();
        f.authorities
            .push(authority(Probe::Reachable { audit_key: None }));
        assert!(check(&f).is_empty(), "an answer without an audit key");
        f.authorities[0] = authority(Probe::Reachable {
            audit_key: Some(audit_key(1)),
        });
        assert!(check(&f).is_empty(), "the pinned audit key");

        f.authorities[0] = authority(Probe::Unreachable {
            reason: "connection refused".into(),
        });
        let found = check(&f);
        assert_eq!(ids(&f), [("remote-keyslot-unreachable", Severity::Warning)]);
        assert!(found[0].found.contains("https://keys.example:7443"));
        assert!(found[0].found.contains("keyslot 2"));
        assert!(found[0].fix.contains("atrest unlock /srv/data.enc"));

        f.authorities[0] = authority(Probe::CaChanged {
            presented: vec![[0x11; 32], [0xbb; 32]],
        });
        let found = check(&f);
        assert_eq!(ids(&f), [("remote-keyslot-ca-changed", Severity::Critical)]);
        let new = format_fingerprint(&[0xbb; 32]);
        assert!(found[0].found.contains(&new), "{}", found[0].found);
        assert!(found[0].found.contains(&format_fingerprint(&[0xaa; 32])));
        assert!(found[0].fix.contains(&format!("--ca-fingerprint {new}")));
        assert!(
            found[0]
                .fix
                .contains("atrest keyslot remove /srv/data.enc 2")
        );

        f.authorities[0] = authority(Probe::TlsFailure {
            reason: "certificate expired".into(),
        });
        assert_eq!(ids(&f), [("remote-keyslot-unreachable", Severity::Warning)]);
        f.authorities[0].threshold = Some((2, 3));
        assert!(check(&f)[0].found.contains("needs 2 of"));
    }

    #[test]
    fn another_audit_key_than_the_pinned_one_is_critical() {
        let mut f = plain();
        f.authorities.push(authority(Probe::Reachable {
            audit_key: Some(audit_key(2)),
        }));
        let found = check(&f);
        assert_eq!(
            ids(&f),
            [("remote-keyslot-audit-key-changed", Severity::Critical)]
        );
        let (now, pinned) = (
            atrest_audit::AuditPublicKey::from_bytes(&audit_key(2))
                .unwrap()
                .to_string(),
            atrest_audit::AuditPublicKey::from_bytes(&audit_key(1))
                .unwrap()
                .to_string(),
        );
        assert!(found[0].found.contains(&now), "{}", found[0].found);
        assert!(found[0].found.contains(&pinned), "{}", found[0].found);
        let fix = &found[0].fix;
        assert!(
            fix.contains(&format!(
                "--ca-fingerprint {}",
                format_fingerprint(&[0xaa; 32])
            )),
            "{fix}"
        );
        assert!(
            fix.contains("atrest keyslot remove /srv/data.enc 2"),
            "{fix}"
        );
    }

    fn boot(id: &str, status: &str, seq: u64) -> ReleasedBoot {
        ReleasedBoot {
            url: "https://keys.example:7443".into(),
            host_id: "web-1".into(),
            boot_id: id.into(),
            boot: status.into(),
            seq,
            timestamp_ms: 1_800_000_000_000 + seq,
            approved_by: None,
        }
    }

    #[test]
    fn an_unaccounted_current_boot_is_a_warning_earlier_ones_info() {
        let mut f = plain();
        f.boot_id = Some("b3".into());
        f.released_boots = vec![boot("b1", "first", 1), boot("b2", "planned", 5)];
        assert!(check(&f).is_empty());

        f.released_boots.push(boot("b3", "unannounced", 9));
        let found = check(&f);
        assert_eq!(ids(&f), [("unaccounted-reboots", Severity::Warning)]);
        assert!(found[0].found.starts_with("this boot: boot b3"));
        assert!(found[0].found.contains("audit entry 9"));
        assert!(found[0].fix.contains("atrest reboot --planned"));

        // The next boot was planned: the old one is only listed.
        f.released_boots.push(boot("b4", "planned", 12));
        f.boot_id = Some("b4".into());
        let found = check(&f);
        assert_eq!(ids(&f), [("unaccounted-reboots", Severity::Info)]);
        assert!(found[0].found.starts_with("1 earlier boot(s)"));

        // A boot id without its ticket counts too.
        f.released_boots.push(boot("b4", "unproven", 13));
        assert!(
            ids(&f).contains(&("unaccounted-reboots", Severity::Warning)),
            "{:?}",
            check(&f)
        );
        assert!(check(&f)[0].found.contains("without its boot ticket"));
    }
}
