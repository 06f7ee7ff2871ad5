// The authority as the witness of format 2 vaults' generations
// (format.md §16.17), included once per backend by `mod.rs` after
// `suite.rs`, whose fixture and helpers it uses.

mod witness {
    use super::*;
    use atrest_remote::{
        Generation, GenerationClaim, GenerationReport, Lineage, ReportReason, ReportedState,
        SignedGenerationReport,
    };

    const VAULT: [u8; 16] = [7; 16];

    fn generation(seq: u64, chain: u8) -> Generation {
        Generation {
            checkpoint: seq / 10,
            seq,
            chain: [chain; 32],
        }
    }

    /// A report of `head` descending from `lineage`, from the boot that
    /// got `BOOT_A`'s ticket (or without it).
    fn report(
        f: &Fixture,
        host: &Host,
        head: Generation,
        config: u64,
        lineage: &[Generation],
        reason: ReportReason,
    ) -> SignedGenerationReport {
        let mut all = vec![head];
        all.extend_from_slice(lineage);
        let signed = host.identity.sign_report(GenerationReport {
            host_id: host.id.clone(),
            vault_id: VAULT,
            checkpoint: head.checkpoint,
            seq: head.seq,
            chain: head.chain,
            config_generation: config,
            reason,
            state: ReportedState::Open,
            lineage: Lineage::new(all).unwrap(),
            boot_id: BootId::new(BOOT_A).unwrap(),
            nonce: RequestNonce::random(),
            timestamp: f.clock.now_ms() / 1000,
        });
        SignedGenerationReport {
            boot_ticket: ticket(f, &host.id, BOOT_A),
            ..signed
        }
    }

    /// An unlock request of `VAULT` at `BOOT_A` claiming `head`.
    fn claim(
        f: &Fixture,
        host: &Host,
        head: Generation,
        config: u64,
        lineage: &[Generation],
    ) -> SignedUnlockRequest {
        let mut all = vec![head];
        all.extend_from_slice(lineage);
        let (blinded, _) = host.binding.blind();
        let signed = host.identity.sign(UnlockRequest {
            host_id: host.id.clone(),
            vault_id: VAULT,
            keyslot: 1,
            key_id: host.binding.key_id(),
            blinded,
            nonce: RequestNonce::random(),
            timestamp: f.clock.now_ms() / 1000,
            boot_id: BootId::new(BOOT_A).unwrap(),
            generation: Some(GenerationClaim {
                checkpoint: head.checkpoint,
                seq: head.seq,
                chain: head.chain,
                config_generation: config,
                lineage: Lineage::new(all).unwrap(),
            }),
        });
        SignedUnlockRequest {
            boot_ticket: ticket(f, &host.id, BOOT_A),
            ..signed
        }
    }

    /// An enrolled host whose boot `BOOT_A` was released to (it holds the
    /// ticket), and its vault witnessed at sequence 100.
    async fn witnessed_host(f: &Fixture, rollback: Policy) -> Host {
        let host = enroll_host(f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                PolicyRule {
                    policy: Policy::Auto,
                    unannounced_reboot: Policy::Approve,
                    rollback,
                },
                "test",
            )
            .await
            .unwrap();
        let (signed, _) = request(f, &host.identity, &host.id, &host.binding);
        granted(unlock(f, &signed).await.unwrap());
        let first = report(f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        f.authority.report_generation(&first, CTX).await.unwrap();
        host
    }

    /// The log's generation entries with this outcome.
    async fn logged(f: &Fixture, outcome: &str) -> Vec<serde_json::Value> {
        entries(f)
            .await
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.details).ok())
            .filter(|d| d.get("generation_report").is_some() && d["outcome"] == outcome)
            .collect()
    }

    #[tokio::test]
    async fn reports_move_the_witness_forward_and_never_back() {
        let Some(f) = fixture().await else { return };
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
        // The first report sets W, and is logged (first of its boot).
        let first = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        let reply = f.authority.report_generation(&first, CTX).await.unwrap();
        assert_eq!(reply.witnessed.seq, 100);
        assert_eq!(reply.witnessed.reason, ReportReason::Mount);
        assert!(reply.audit_seq.is_some());
        // A periodic report that descends from W moves it, unlogged.
        let next = report(
            &f,
            &host,
            generation(120, 2),
            3,
            &[generation(100, 1)],
            ReportReason::Periodic,
        );
        let reply = f.authority.report_generation(&next, CTX).await.unwrap();
        assert_eq!(reply.witnessed.generation(), generation(120, 2));
        assert_eq!(reply.audit_seq, None);
        // A heartbeat repeats it.
        let beat = report(&f, &host, generation(120, 2), 3, &[], ReportReason::Heartbeat);
        f.authority.report_generation(&beat, CTX).await.unwrap();
        // Regressed: a lower sequence, or an older config.
        for (head, config, lineage) in [
            (generation(110, 9), 3, vec![]),
            (generation(130, 3), 2, vec![generation(120, 2)]),
        ] {
            let back = report(&f, &host, head, config, &lineage, ReportReason::Unmount);
            let e = f.authority.report_generation(&back, CTX).await.unwrap_err();
            assert_eq!(e.code(), "generation_regressed", "{head:?}");
        }
        // Forked: not behind W, but W is not in its lineage.
        let fork = report(
            &f,
            &host,
            generation(130, 4),
            3,
            &[generation(110, 9)],
            ReportReason::Unmount,
        );
        let e = f.authority.report_generation(&fork, CTX).await.unwrap_err();
        assert_eq!(e.code(), "generation_forked");
        // W did not move; the refusals are logged with both generations.
        let stored = f
            .authority
            .storage()
            .vault_generation(&host.id, VAULT)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.generation, generation(120, 2));
        let regressed = logged(&f, "generation_regressed").await;
        assert_eq!(regressed.len(), 2);
        assert_eq!(regressed[0]["reported"]["seq"], 110);
        assert_eq!(regressed[0]["witnessed"]["seq"], 120);
        assert_eq!(logged(&f, "generation_forked").await.len(), 1);
        assert_eq!(logged(&f, "witnessed").await.len(), 1);
        // A replayed report is refused, and W survives a restart.
        assert_eq!(
            f.authority
                .report_generation(&next, CTX)
                .await
                .unwrap_err()
                .code(),
            "replayed_nonce"
        );
        let f = restart(f).await;
        let stored = f
            .authority
            .storage()
            .vault_generation(&host.id, VAULT)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.generation, generation(120, 2));
    }

    #[tokio::test]
    async fn only_the_released_boot_reports() {
        let Some(f) = fixture().await else { return };
        let host = enroll_host(&f, "web-1").await;
        // Before any release there is no ticket to show.
        let early = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        let e = f.authority.report_generation(&early, CTX).await.unwrap_err();
        assert_eq!(e.code(), "unproven_boot");
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
        // Without the ticket (a copy of the disk), with another boot's, or
        // signed by another key: refused, and nothing is witnessed.
        let mut bare = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        bare.boot_ticket = None;
        let mut wrong = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        wrong.boot_ticket = Some(BootTicket::random());
        let mut forged = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        forged.signature = HostIdentity::generate()
            .sign_report(forged.report.clone())
            .signature;
        for (signed, code) in [
            (bare, "unproven_boot"),
            (wrong, "unproven_boot"),
            (forged, "bad_signature"),
        ] {
            let e = f.authority.report_generation(&signed, CTX).await.unwrap_err();
            assert_eq!(e.code(), code);
        }
        assert!(
            f.authority
                .storage()
                .vault_generation(&host.id, VAULT)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(logged(&f, "unproven_boot").await.len(), 3);
        // A revoked host reports nothing.
        f.authority.revoke(&host.id, "test").await.unwrap();
        let late = report(&f, &host, generation(100, 1), 3, &[], ReportReason::Mount);
        let e = f.authority.report_generation(&late, CTX).await.unwrap_err();
        assert_eq!(e.code(), "revoked");
    }

    #[tokio::test]
    async fn an_unlock_claim_is_judged_against_the_witness() {
        let Some(f) = fixture().await else { return };
        let host = witnessed_host(&f, Policy::Approve).await;
        // Current: W itself, or W in the lineage. Released, with W.
        for (head, lineage) in [
            (generation(100, 1), vec![]),
            (generation(120, 2), vec![generation(100, 1)]),
        ] {
            let grant = granted(unlock(&f, &claim(&f, &host, head, 3, &lineage)).await.unwrap());
            assert_eq!(grant.witnessed.unwrap().generation(), generation(100, 1));
        }
        // Older, forked, an older config: held for an approver, naming
        // both generations.
        for (head, config, lineage, status) in [
            (generation(90, 9), 3, vec![], "older"),
            (generation(120, 2), 3, vec![generation(100, 5)], "forked"),
            (generation(120, 2), 2, vec![generation(100, 1)], "older"),
        ] {
            let signed = claim(&f, &host, head, config, &lineage);
            let view = pending(unlock(&f, &signed).await.unwrap());
            assert!(
                view.reason.contains("disk checkpoint") && view.reason.contains("witnessed"),
                "{}",
                view.reason
            );
            let held = entries(&f).await.last().unwrap().details.clone();
            let held: serde_json::Value = serde_json::from_str(&held).unwrap();
            assert_eq!(held["generation"]["status"], status, "{held}");
            assert_eq!(held["generation"]["claimed"]["seq"], head.seq);
            assert_eq!(held["generation"]["witnessed"]["seq"], 100);
            f.authority.decide(&view.id, false, "test").await.unwrap();
        }
        // Under `rollback: deny` the same is refused, and logged so.
        let mut rule = f.authority.rule_for(&f.authority.host(&host.id).await.unwrap().record);
        rule.rollback = Policy::Deny;
        f.authority
            .set_policy(&PolicyScope::Host(host.id.clone()), rule, "test")
            .await
            .unwrap();
        let e = unlock(&f, &claim(&f, &host, generation(90, 9), 3, &[]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "denied");
        assert!(e.to_string().contains("older than"), "{e}");
        let denied = entries(&f).await.last().unwrap().details.clone();
        let denied: serde_json::Value = serde_json::from_str(&denied).unwrap();
        assert_eq!(denied["outcome"], "denied");
        assert_eq!(denied["generation"]["status"], "older");
        assert_eq!(denied["generation"]["witnessed"]["reason"], "mount");
        // A vault nothing was witnessed for is released (first).
        let (plain, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &plain).await.unwrap());
    }

    #[tokio::test]
    async fn an_approved_rollback_accepts_one_report() {
        let Some(f) = fixture().await else { return };
        let host = witnessed_host(&f, Policy::Approve).await;
        // Before any approval a rollback report is refused like any fork.
        let early = report(
            &f,
            &host,
            generation(101, 8),
            3,
            &[generation(90, 9)],
            ReportReason::RollbackAccepted,
        );
        let e = f.authority.report_generation(&early, CTX).await.unwrap_err();
        assert_eq!(e.code(), "generation_forked");
        // An earlier copy, held, approved, released with W.
        let view = pending(
            unlock(&f, &claim(&f, &host, generation(90, 9), 3, &[]))
                .await
                .unwrap(),
        );
        f.authority.decide(&view.id, true, "alice").await.unwrap();
        let grant = granted(poll_now(&f, &view.id).await.unwrap());
        assert_eq!(grant.witnessed.unwrap().seq, 100);
        // The host's `ROLLBACK_ACCEPTED` (past W's sequence) is taken
        // once, though W is not in its lineage.
        let accepted = report(
            &f,
            &host,
            generation(101, 8),
            3,
            &[generation(90, 9)],
            ReportReason::RollbackAccepted,
        );
        let reply = f.authority.report_generation(&accepted, CTX).await.unwrap();
        assert_eq!(reply.witnessed.generation(), generation(101, 8));
        assert!(reply.audit_seq.is_some());
        let stored = f
            .authority
            .storage()
            .vault_generation(&host.id, VAULT)
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.rollback_approved);
        // Then the normal rules: a second one is a fork, and the new W
        // is what claims are judged against.
        let again = report(
            &f,
            &host,
            generation(102, 7),
            3,
            &[generation(90, 9)],
            ReportReason::RollbackAccepted,
        );
        let e = f.authority.report_generation(&again, CTX).await.unwrap_err();
        assert_eq!(e.code(), "generation_forked");
        let current = claim(&f, &host, generation(101, 8), 3, &[]);
        granted(unlock(&f, &current).await.unwrap());
    }

    #[tokio::test]
    async fn an_auto_rollback_rule_releases_and_counts_as_approval() {
        let Some(f) = fixture().await else { return };
        let host = witnessed_host(&f, Policy::Auto).await;
        let grant = granted(
            unlock(&f, &claim(&f, &host, generation(90, 9), 3, &[]))
                .await
                .unwrap(),
        );
        assert_eq!(grant.witnessed.unwrap().seq, 100);
        let released = entries(&f).await;
        let released = released
            .iter()
            .rev()
            .find(|e| e.details.contains("\"released\""))
            .unwrap();
        assert!(released.details.contains("\"older\""), "{}", released.details);
        let accepted = report(
            &f,
            &host,
            generation(101, 8),
            3,
            &[generation(90, 9)],
            ReportReason::RollbackAccepted,
        );
        f.authority.report_generation(&accepted, CTX).await.unwrap();
    }
}
