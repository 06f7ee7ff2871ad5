//! Approvers: people who decide held requests, each with a TOTP secret
//! (added by an operator, shown once); the check of their codes, each code
//! accepted once; and the budgets of wrong codes the approval page takes
//! per client address ([`LoginLimits`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::HostId;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::authority::Authority;
use crate::error::AuthorityError;
use crate::events::AuditEvent;
use crate::storage::Storage;

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

/// A count that starts at its first attempt and lasts [`FAILURE_WINDOW`].
#[derive(Clone, Copy, Default)]
struct Window {
    start: u64,
    count: u32,
}

impl Window {
    fn current(&mut self, now: u64) -> &mut Self {
        if now >= self.start.saturating_add(FAILURE_WINDOW) {
            *self = Self {
                start: now,
                count: 0,
            };
        }
        self
    }

    fn live(&self, now: u64) -> bool {
        now < self.start.saturating_add(FAILURE_WINDOW)
    }
}

/// Why a login attempt was not even checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NameFromAddress,
    Address,
    Untrusted,
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
/// The maps hold only live windows, at most [`MAX_FAILURES_UNTRUSTED`]
/// untrusted addresses' worth, plus trusted addresses (each made by a good
/// login).
#[derive(Default)]
pub(crate) struct LoginLimits {
    by_name: HashMap<(String, Client), Window>,
    by_address: HashMap<Client, Window>,
    untrusted: Window,
    /// Last good login from each address.
    trusted: HashMap<Client, u64>,
}

impl LoginLimits {
    pub fn take(&mut self, name: &str, client: Client, now: u64) -> Result<Attempt, Refusal> {
        self.by_name.retain(|_, w| w.live(now));
        self.by_address.retain(|_, w| w.live(now));
        self.trusted
            .retain(|_, at| now < at.saturating_add(TRUSTED_FOR));
        let untrusted = !self.trusted.contains_key(&client);
        let key = (name.to_owned(), client);
        let by_name = self.by_name.get(&key).map_or(0, |w| w.count);
        let by_address = self.by_address.get(&client).map_or(0, |w| w.count);
        if by_name >= MAX_FAILURES {
            return Err(Refusal::NameFromAddress);
        }
        if by_address >= MAX_FAILURES_PER_ADDRESS {
            return Err(Refusal::Address);
        }
        if untrusted && self.untrusted.current(now).count >= MAX_FAILURES_UNTRUSTED {
            return Err(Refusal::Untrusted);
        }
        for window in [
            self.by_name.entry(key).or_default(),
            self.by_address.entry(client).or_default(),
        ] {
            let window = window.current(now);
            window.count = window.count.saturating_add(1);
        }
        if untrusted {
            self.untrusted.count = self.untrusted.count.saturating_add(1);
        }
        Ok(Attempt { untrusted })
    }

    /// A right code: the name's failures from this address are forgiven,
    /// the attempt given back, and the address trusted.
    pub fn succeeded(&mut self, name: &str, client: Client, attempt: Attempt, now: u64) {
        self.by_name.remove(&(name.to_owned(), client));
        if let Some(window) = self.by_address.get_mut(&client) {
            window.count = window.count.saturating_sub(1);
        }
        if attempt.untrusted {
            self.untrusted.count = self.untrusted.count.saturating_sub(1);
        }
        self.trusted.insert(client, now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_address_cannot_lock_out_another() {
        let mut limits = LoginLimits::default();
        let attacker = client_of(Some("198.51.100.7".parse().unwrap()));
        let approver = client_of(Some("203.0.113.9".parse().unwrap()));
        for _ in 0..MAX_FAILURES {
            let _ = limits.take("alice", attacker, 1000).unwrap();
        }
        for _ in 0..30 {
            assert_eq!(
                limits.take("alice", attacker, 1000).unwrap_err(),
                Refusal::NameFromAddress
            );
        }
        for name in ["bob", "carol", "dave", "erin", "frank"] {
            let _ = limits.take(name, attacker, 1000).unwrap();
        }
        assert_eq!(
            limits.take("grace", attacker, 1000).unwrap_err(),
            Refusal::Address
        );
        let attempt = limits.take("alice", approver, 1000).unwrap();
        limits.succeeded("alice", approver, attempt, 1000);
        // The windows pass.
        let _ = limits
            .take("alice", attacker, 1000 + FAILURE_WINDOW)
            .unwrap();
    }

    #[test]
    fn many_addresses_share_one_cap_that_trusted_addresses_skip() {
        let mut limits = LoginLimits::default();
        let trusted = client_of(Some("203.0.113.9".parse().unwrap()));
        let attempt = limits.take("alice", trusted, 0).unwrap();
        limits.succeeded("alice", trusted, attempt, 0);
        let mut guesses = 0;
        for host in 0..=255u8 {
            let client = client_of(Some(IpAddr::from([198, 51, 100, host])));
            while limits.take("alice", client, 10).is_ok() {
                guesses += 1;
            }
        }
        assert_eq!(guesses, MAX_FAILURES_UNTRUSTED);
        let fresh = client_of(Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            limits.take("alice", fresh, 10).unwrap_err(),
            Refusal::Untrusted
        );
        let _ = limits.take("alice", trusted, 10).unwrap();
        // Trust lapses.
        let later = TRUSTED_FOR + 1;
        let _ = limits.take("alice", fresh, later).unwrap();
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
