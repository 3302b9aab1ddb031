//! Exponential per-object backoff for controllers' `error_policy`.
//!
//! kube-runtime's `error_policy` returns an `Action`; a fixed requeue either hammers the
//! API server or retries too slowly. [`Backoff`] doubles the delay for every consecutive
//! failure of the same object, up to a cap, and forgets the object on its next success.

use std::{collections::HashMap, sync::Mutex, time::Duration};

/// Per-object exponential backoff: `base * 2^(failures-1)`, capped at `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Backoff {
    /// 1 s doubling up to 5 minutes.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let exponent = (*count - 1).min(31);
        self.base
            .checked_mul(1u32 << exponent)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Forgets `key` after a success, so its next failure starts again at `base`.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Number of consecutive failures recorded for `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The key [`Backoff`] uses for a namespaced or cluster-scoped object.
pub fn object_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_object_and_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<_> = (0..6).map(|_| b.next_delay("ns/a")).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            got,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Another object has its own count.
        assert_eq!(b.next_delay("ns/b"), ms(100));
        assert_eq!(b.failures("ns/a"), 6);
    }

    #[test]
    fn success_resets_the_object() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        b.next_delay("x");
        b.next_delay("x");
        b.reset("x");
        assert_eq!(b.failures("x"), 0);
        assert_eq!(b.next_delay("x"), Duration::from_secs(1));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            assert!(b.next_delay("k") <= Duration::from_secs(300));
        }
    }

    #[test]
    fn keys_name_namespace_and_object() {
        assert_eq!(object_key(Some("default"), "web"), "default/web");
        assert_eq!(object_key(None, "10.0.0.1"), "10.0.0.1");
    }
}
