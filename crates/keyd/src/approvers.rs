//! Approvers: people who decide held requests, each with a TOTP secret
//! (added by an operator, shown once); the check of their codes, each code
//! accepted once; and the budgets of wrong codes the approval page takes
//! per client address ([`Authority::take_login`]), kept in the database
//! so that every replica counts against the same ones.

use std::net::{IpAddr, Ipv6Addr};

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::HostId;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::authority::Authority;
use crate::error::AuthorityError;
use crate::events::AuditEvent;
use crate::storage::{LoginAttempt, LoginCounts, Storage, StorageError};

/// Wrong codes one client address may send for one approver name in a
/// [`FAILURE_WINDOW`] (a success gives them back).
pub const MAX_FAILURES: u32 = 5;
/// Wrong codes one client address may send for all names together per
/// window, so one address cannot guess across names.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 10;
/// Wrong codes per window from all addresses that have no recent good
/// login, together: what bounds guessing from many addresses at once.
pub const MAX_FAILURES_UNTRUSTED: u32 = 60;
/// Seconds a counting window lasts from its first attempt.
pub const FAILURE_WINDOW: u64 = 60;
/// Seconds an address stays trusted after an approver logged in from it:
/// its attempts skip the [`MAX_FAILURES_UNTRUSTED`] cap.
pub const TRUSTED_FOR: u64 = 86_400;

/// A new approver's TOTP secret, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewApprover {
    pub name: String,
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    pub otpauth_uri: String,
}

fn totp_for(name: &str, secret: Vec<u8>) -> Result<Totp, AuthorityError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_account_name(name)
        .with_issuer(Some("atrest keyd"))
        .build()
        .map_err(|_| {
            AuthorityError::InvalidField(atrest_remote::InvalidField {
                field: "approver",
                rule: "a name usable in an otpauth URI",
            })
        })
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Adds (or replaces) an approver with a fresh TOTP secret.
    pub async fn add_approver(
        &self,
        name: &str,
        actor: &str,
    ) -> Result<NewApprover, AuthorityError> {
        HostId::new(name)?;
        let secret: [u8; 20] = atrest_core::random_array();
        let totp = totp_for(name, secret.to_vec())?;
        self.audit()
            .append(
                NewEntry::new(EntryKind::Authority, actor)
                    .subject(name)
                    .details(AuditEvent::approver_added().details()),
            )
            .await?;
        self.storage()
            .put_approver(name, &secret, self.now())
            .await?;
        Ok(NewApprover {
            name: name.to_owned(),
            secret: Secret::from(secret.to_vec()).to_base32(),
            otpauth_uri: totp.to_url().map_err(|_| {
                AuthorityError::InvalidField(atrest_remote::InvalidField {
                    field: "approver",
                    rule: "a name usable in an otpauth URI",
                })
            })?,
        })
    }

    /// Checks an approver's TOTP code (this period or the one either side),
    /// each code once.
    pub async fn check_approver(&self, name: &str, code: &str) -> Result<(), AuthorityError> {
        let Some(approver) = self.storage().approver(name).await? else {
            return Err(AuthorityError::BadApproverCode);
        };
        let totp = totp_for(name, approver.totp_secret.to_vec())?;
        let step = totp
            .check(code.trim(), self.now())
            .ok_or(AuthorityError::BadApproverCode)?;
        if step <= approver.last_step || !self.storage().use_approver_step(name, step).await? {
            return Err(AuthorityError::BadApproverCode);
        }
        Ok(())
    }
}

/// Shared so tests and the web page can compute a code.
pub fn totp_code(secret_base32: &str, name: &str, time: u64) -> Option<String> {
    let secret = Secret::try_from_base32(secret_base32).ok()?;
    totp_for(name, secret.as_bytes().to_vec())
        .ok()
        .map(|t| t.generate(time).to_string())
}

/// Who a login attempt comes from: its IP address, an IPv6 one cut to its
/// /64 (one client usually holds a whole /64). `None` when the listener
/// gives no address; those share one budget.
pub(crate) type Client = Option<IpAddr>;

pub(crate) fn client_of(peer: Option<IpAddr>) -> Client {
    peer.map(|ip| match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    })
}

/// The budgets' key for a client: its address as text (an IPv6 one
/// already cut to its /64), `unknown` for those without one.
fn client_key(client: Client) -> String {
    client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Why a login attempt was not even checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NameFromAddress,
    Address,
    Untrusted,
}

/// The first budget of wrong codes `counts` (read before the attempt) has
/// used up, if any.
fn refusal(counts: &LoginCounts) -> Option<Refusal> {
    if counts.name_from_address >= MAX_FAILURES {
        Some(Refusal::NameFromAddress)
    } else if counts.address >= MAX_FAILURES_PER_ADDRESS {
        Some(Refusal::Address)
    } else if counts
        .untrusted
        .is_some_and(|n| n >= MAX_FAILURES_UNTRUSTED)
    {
        Some(Refusal::Untrusted)
    } else {
        None
    }
}

/// An attempt taken: what to give back if its code is right.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub(crate) struct Attempt {
    untrusted: bool,
}

/// Login attempt budgets of the approval page.
///
/// The old rule (5 failures per name, 30 for everyone) let anyone lock
/// every approver out with 30 bogus logins a minute. What an attacker
/// without the TOTP secret must not do is (a) guess a code, or (b) stop the
/// real approver from logging in; a budget keyed only by the name, or one
/// global budget, serves (a) at the cost of (b). So budgets are kept per
/// client address, where the attacker's guesses are:
///
/// - per (name, address), [`MAX_FAILURES`] a window: one address guesses a
///   name at 5 a minute, ~46 days on average for a 6-digit code of which 3
///   are valid at a time;
/// - per address, [`MAX_FAILURES_PER_ADDRESS`], so spreading guesses over
///   names from one address gains little;
/// - for addresses with no good login in [`TRUSTED_FOR`], together,
///   [`MAX_FAILURES_UNTRUSTED`]: an attacker with many addresses still
///   guesses at most 60 a minute in all (~4 days per valid code on average,
///   and every failure is in keyd's log as a warning).
///
/// Attempts are counted before the code is checked (which waits on the
/// database), so guesses sent in parallel count too; a right code gives its
/// attempt back. An approver on another address is never refused for the
/// attacker's failures. Only an attacker with many addresses can fill the
/// untrusted cap, and then only for addresses no approver used within a
/// day: one's usual phone still logs in, and `atrest keyd approve` works.
///
/// The counts and the trusted addresses are rows of the authority's
/// database ([`Storage::take_login`]), each window kept until it is over
/// (the maintenance tick forgets it then): every replica counts against
/// the same budgets, an attempt on one waiting for a count on another, so
/// R replicas allow no more guesses than one, and a restart forgets none.
impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Counts a login attempt of `name` from `client` against the budgets
    /// above, or says which one it is over (nothing counted then).
    pub(crate) async fn take_login(
        &self,
        name: &str,
        client: Client,
    ) -> Result<Result<Attempt, Refusal>, StorageError> {
        let now = self.now();
        let client = client_key(client);
        let attempt = LoginAttempt {
            name,
            client: &client,
            now,
            window_end: now.saturating_add(FAILURE_WINDOW),
        };
        // The store counts the attempt when `refusal` finds none in the
        // counts it read; the same counts give the same verdict here.
        let counts = self
            .storage()
            .take_login(&attempt, |counts| refusal(counts).is_none())
            .await?;
        Ok(match refusal(&counts) {
            Some(refusal) => Err(refusal),
            None => Ok(Attempt {
                untrusted: counts.untrusted.is_some(),
            }),
        })
    }

    /// A right code: the name's failures from this address are forgiven,
    /// the attempt given back, and the address trusted for
    /// [`TRUSTED_FOR`].
    pub(crate) async fn login_succeeded(
        &self,
        name: &str,
        client: Client,
        attempt: Attempt,
    ) -> Result<(), StorageError> {
        self.storage()
            .login_succeeded(
                name,
                &client_key(client),
                attempt.untrusted,
                self.now().saturating_add(TRUSTED_FOR),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_first_budget_used_up_is_the_refusal() {
        let counts = |name_from_address, address, untrusted| LoginCounts {
            name_from_address,
            address,
            untrusted,
        };
        let cases = [
            (counts(0, 0, Some(0)), None),
            (counts(MAX_FAILURES - 1, 9, Some(59)), None),
            (counts(4, 9, None), None),
            (counts(0, 0, None), None),
            (
                counts(MAX_FAILURES, 10, Some(60)),
                Some(Refusal::NameFromAddress),
            ),
            (
                counts(0, MAX_FAILURES_PER_ADDRESS, Some(60)),
                Some(Refusal::Address),
            ),
            (
                counts(0, 0, Some(MAX_FAILURES_UNTRUSTED)),
                Some(Refusal::Untrusted),
            ),
        ];
        for (counts, expected) in cases {
            assert_eq!(refusal(&counts), expected, "{counts:?}");
        }
    }

    #[test]
    fn a_client_without_an_address_has_a_key_no_address_has() {
        assert_eq!(client_key(None), "unknown");
        assert_eq!(
            client_key(client_of(Some("2001:db8:1:2:aaaa::1".parse().unwrap()))),
            "2001:db8:1:2::"
        );
        assert_eq!(
            client_key(client_of(Some("198.51.100.7".parse().unwrap()))),
            "198.51.100.7"
        );
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a = client_of(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = client_of(Some("2001:db8:1:2:bbbb::2".parse().unwrap()));
        let c = client_of(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_of(Some("::ffff:192.0.2.1".parse().unwrap())),
            Some("192.0.2.1".parse().unwrap())
        );
    }
}
