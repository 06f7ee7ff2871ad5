//! Enrollment: one-time tokens, a host enrolling with its key (and getting
//! its exchange key), and an enrolled host binding another vault.

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, HostPublicKey, HostSecret, to_base64url};
use atrest_wire::Enrollment;
use serde::Serialize;

use crate::authority::{Authority, RequestContext, check_state};
use crate::error::AuthorityError;
use crate::events::{AuditEvent, BindEvent};
use crate::state::HostEntry;
use crate::storage::{Held, HostRecord, HostState, Storage};

/// A freshly made enrollment token. Its text is shown once; the authority
/// keeps only its hash.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Token {
    pub token: String,
    pub group: String,
    pub expires_at: u64,
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Makes a one-time token for `group`, valid `lifetime` seconds
    /// ([`MIN_TOKEN_LIFETIME`] to [`MAX_TOKEN_LIFETIME`]).
    pub async fn create_token(
        &self,
        group: &str,
        lifetime: u64,
        actor: &str,
    ) -> Result<Token, AuthorityError> {
        check_group(group)?;
        check_token_lifetime(lifetime)?;
        let bytes: [u8; 32] = atrest_core::random_array();
        // A fixed prefix: never starts with `-` (which a command line would
        // take for an option), and secret scanners can recognize it.
        let token = format!("atrest_tok_{}", to_base64url(&bytes));
        let expires_at = self.now().saturating_add(lifetime);
        self.audit()
            .append(
                NewEntry::new(EntryKind::Token, actor)
                    .subject(group)
                    .details(AuditEvent::Token { expires_at }.details()),
            )
            .await?;
        self.storage()
            .insert_token(atrest_core::sha256(token.as_bytes()), group, expires_at)
            .await?;
        Ok(Token {
            token,
            group: group.to_owned(),
            expires_at,
        })
    }

    /// Spends `token` to enroll a host under `name` with its Ed25519 key,
    /// and makes the host's exchange secret. The host exists only once its
    /// audit entry is durable.
    pub async fn enroll(
        &self,
        token: &str,
        name: &str,
        public_key: HostPublicKey,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let result = self.enroll_host(token, name, public_key, context).await;
        if let Err(e) = &result
            && !matches!(e, AuthorityError::Audit(_))
        {
            // A spent or stolen token tried again leaves a trace.
            self.refused(EntryKind::Enrollment, name, e, || {
                AuditEvent::EnrollRefused {
                    outcome: e.code().into(),
                    public_key: public_key.to_string(),
                    source: context.source_text(),
                }
            })
            .await;
        }
        result
    }

    async fn enroll_host(
        &self,
        token: &str,
        name: &str,
        public_key: HostPublicKey,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let id = HostId::new(name)?;
        let secret = HostSecret::generate();
        let now = self.now();
        let record = HostRecord {
            id: id.clone(),
            group: String::new(),
            public_key,
            key_id: secret.key_id(),
            previous_key_id: None,
            state: HostState::Active,
            enrolled_at: now,
        };
        let token_hash = atrest_core::sha256(token.as_bytes());
        if self.storage().host(&id).await?.is_some() {
            return Err(AuthorityError::HostExists(id));
        }
        // One transaction spends the token and writes the host; it commits
        // only once the enrollment's entry is durable, so a host never
        // exists without its entry, and an entry that cannot be written
        // leaves no host (and the token unspent). Only a commit that fails
        // after the entry leaves an entry for an enrollment that did not
        // happen; the host then enrolls again with the same token.
        let (group, held) = self
            .storage()
            .enroll(token_hash, now, &record, &secret.expose_bytes())
            .await?
            .ok_or(AuthorityError::BadToken)?;
        self.audit()
            .append(
                NewEntry::new(EntryKind::Enrollment, id.as_str())
                    .subject(id.as_str())
                    .details(
                        AuditEvent::Enrolled {
                            group: group.clone(),
                            public_key: public_key.to_string(),
                            key_id: secret.key_id().to_string(),
                            source: context.source_text(),
                        }
                        .details(),
                    ),
            )
            .await?;
        held.commit().await?;
        let record = HostRecord { group, ..record };
        self.metrics().enrollments.inc();
        self.host_table().put(std::sync::Arc::new(HostEntry {
            record: record.clone(),
            secrets: vec![secret.clone()],
        }));
        Ok(Enrollment {
            host_id: id,
            group: record.group,
            exchange_key: secret.public_key(),
            key_id: secret.key_id(),
            audit_public_key: self.audit().public_key(),
        })
    }

    /// An enrolled host binding another vault: it proves it is the host
    /// and gets its current exchange key (public), so no token is spent.
    pub async fn bind(
        &self,
        signed: &atrest_remote::SignedBindRequest,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let bind = &signed.bind;
        let details = |outcome: &str| BindEvent {
            outcome: outcome.into(),
            nonce: to_base64url(&bind.nonce.0),
            source: context.source_text(),
            key_id: None,
        };
        let checked = async {
            let entry = self.current_host(&bind.host_id).await?;
            atrest_remote::verify_bind(
                signed,
                &entry.record.public_key,
                self.now(),
                self.options().max_skew,
            )?;
            check_state(&entry.record)?;
            self.spend_nonce(bind.nonce.0, bind.timestamp).await?;
            Ok::<_, AuthorityError>(entry)
        }
        .await;
        let entry = match checked {
            Ok(entry) => entry,
            Err(e) => {
                self.refused(EntryKind::Enrollment, bind.host_id.as_str(), &e, || {
                    AuditEvent::Bind(details(e.code()))
                })
                .await;
                return Err(e);
            }
        };
        let current = entry
            .secrets
            .first()
            .ok_or_else(|| AuthorityError::Shredded(entry.record.id.clone()))?;
        let bound = BindEvent {
            key_id: Some(current.key_id().to_string()),
            ..details("bound")
        };
        self.audit()
            .append(
                NewEntry::new(EntryKind::Enrollment, entry.record.id.as_str())
                    .subject(entry.record.id.as_str())
                    .details(AuditEvent::Bind(bound).details()),
            )
            .await?;
        Ok(Enrollment {
            host_id: entry.record.id.clone(),
            group: entry.record.group.clone(),
            exchange_key: current.public_key(),
            key_id: current.key_id(),
            audit_public_key: self.audit().public_key(),
        })
    }
}

/// Group names follow host name rules (they appear in the log and URLs).
pub(crate) fn check_group(group: &str) -> Result<(), AuthorityError> {
    HostId::new(group)?;
    Ok(())
}

/// The shortest token lifetime: less cannot outlast a boot's enrollment.
pub const MIN_TOKEN_LIFETIME: u64 = 60;
/// The longest: a token is a bearer credential for a fleet's group, so a
/// leaked one (user-data, a ticket, a shell history) stops working within a
/// week at most.
pub const MAX_TOKEN_LIFETIME: u64 = 7 * 86_400;

fn check_token_lifetime(lifetime: u64) -> Result<(), AuthorityError> {
    if (MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&lifetime) {
        return Ok(());
    }
    Err(AuthorityError::InvalidField(atrest_remote::InvalidField {
        field: "expires_in",
        rule: "from 60 to 604800 seconds (1 minute to 7 days); \
               make the token for one enrollment and a new one for the next",
    }))
}
