//! Model versions by feature flag: the active version, a shadow version (scored and stored, not
//! acted on) and a canary version for a sticky percentage of accounts. Stored in the store (one
//! document with a version number) and re-read by every instance every `flags_poll_ms`, so a
//! change reaches all of them within a second, without a restart.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tally_core::AccountId;

/// The flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// Bumped by every change (a change lands only if newer).
    #[serde(default)]
    pub revision: i64,
    /// The version that decides.
    pub active: String,
    /// A version also scored and stored, never acted on.
    #[serde(default)]
    pub shadow: Option<String>,
    /// A version that decides for a sticky share of accounts.
    #[serde(default)]
    pub canary: Option<String>,
    /// That share, in percent (0 to 100).
    #[serde(default)]
    pub canary_percent: u8,
}

impl Flags {
    /// Flags with only an active version.
    pub fn active(version: &str) -> Self {
        Self { revision: 0, active: version.to_owned(), shadow: None, canary: None, canary_percent: 0 }
    }

    /// The version deciding for `account`: the canary for the accounts whose stable hash falls
    /// below the percentage (the same accounts while the percentage stays; raising it only
    /// adds accounts), else the active one.
    pub fn deciding(&self, account: &AccountId) -> &str {
        match &self.canary {
            Some(canary) if bucket(account.as_str()) < u32::from(self.canary_percent.min(100)) => canary,
            _ => &self.active,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.canary_percent > 100 {
            return Err(format!("canary_percent must be 0 to 100, got {}", self.canary_percent));
        }
        if self.canary_percent > 0 && self.canary.is_none() {
            return Err("canary_percent needs a canary version".into());
        }
        Ok(())
    }
}

/// 0..100 from an account id (FNV-1a: stable across processes and releases, unlike the std
/// hasher).
fn bucket(account: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in account.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % 100
}

/// The flags in force in this process.
#[derive(Debug)]
pub struct FlagsView(RwLock<Arc<Flags>>);

impl FlagsView {
    /// Starting from `flags`.
    pub fn new(flags: Flags) -> Self {
        Self(RwLock::new(Arc::new(flags)))
    }

    /// The flags now.
    pub fn get(&self) -> Arc<Flags> {
        Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces them if `flags` is newer; whether it was.
    pub fn offer(&self, flags: Flags) -> bool {
        let mut current = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if flags.revision > current.revision {
            *current = Arc::new(flags);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_is_sticky_by_account_and_grows_with_its_percentage() {
        let mut f = Flags::active("1");
        f.canary = Some("2".into());
        let accounts: Vec<AccountId> = (0..2000).map(|i| AccountId::parse(format!("acct-{i}")).expect("id")).collect();
        let on = |f: &Flags| accounts.iter().filter(|a| f.deciding(a) == "2").cloned().collect::<Vec<_>>();
        f.canary_percent = 10;
        let ten = on(&f);
        assert!((150..250).contains(&ten.len()), "about 10 %: {}", ten.len());
        assert_eq!(on(&f), ten, "sticky");
        f.canary_percent = 30;
        let thirty = on(&f);
        assert!(ten.iter().all(|a| thirty.contains(a)), "raising the share keeps the canary accounts");
        f.canary_percent = 0;
        assert!(on(&f).is_empty());
    }

    #[test]
    fn only_newer_flags_replace_the_ones_in_force() {
        let view = FlagsView::new(Flags::active("1"));
        let mut next = Flags::active("2");
        next.revision = 3;
        assert!(view.offer(next.clone()));
        assert!(!view.offer(Flags { revision: 2, ..Flags::active("9") }));
        assert_eq!(view.get().active, "2");
    }
}
