//! Expectations: the writes of ours the watch cache has not shown yet.
//!
//! The planner decides from the watch caches, which lag the controller's own writes. Planning
//! from a cache that has not seen the pods just created, deleted or patched repeats those
//! writes (a second create, a second readiness-gate condition, an in-place patch sent twice)
//! and miscounts the unavailability budget. So every write records what the cache must show
//! before this TApp is planned again (the approach of Kubernetes' ReplicaSet controller); a
//! reconcile that finds an expectation unmet does nothing and waits for the watch event, which
//! triggers the TApp again. An expectation that is not met within its TTL (a lost event) is
//! dropped, so a lost event delays a TApp by the TTL at most, never stalls it.
//!
//! resourceVersions are compared as numbers, as kube-apiserver's (etcd revisions) and the
//! emulated API server's are; a write whose resourceVersion is not a number is not waited for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// What the cache must show of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// We created it: the pod exists with at least this resourceVersion.
    Created(u64),
    /// We patched it: at least this resourceVersion, or the pod is gone (deleted meanwhile).
    Written(u64),
    /// We deleted the pod with this UID: gone, or terminating.
    Deleted(String),
}

#[derive(Debug, Default)]
struct ForTApp {
    /// The TApp's resourceVersion after our last write to it, and until when to wait.
    tapp: Option<(u64, Instant)>,
    /// Pod name -> what the cache must show, and until when to wait for it.
    pods: HashMap<String, (Want, Instant)>,
}

impl ForTApp {
    fn is_empty(&self) -> bool {
        self.tapp.is_none() && self.pods.is_empty()
    }
}

fn number(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|r| r.parse().ok())
}

/// Outstanding expectations per TApp key (`namespace/name`).
#[derive(Debug)]
pub struct Expectations {
    ttl: Duration,
    all: Mutex<HashMap<String, ForTApp>>,
}

impl Expectations {
    /// Expectations dropped after `ttl` if never met.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            all: Mutex::default(),
        }
    }

    fn with<R>(&self, key: &str, f: impl FnOnce(&mut ForTApp) -> R) -> R {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(key.to_string()).or_default();
        let r = f(entry);
        if entry.is_empty() {
            all.remove(key);
        }
        r
    }

    fn pod(&self, key: &str, pod: &str, want: Want) {
        self.with(key, |e| {
            // A later write supersedes an earlier one (its resourceVersion is higher).
            e.pods
                .insert(pod.to_string(), (want, Instant::now() + self.ttl));
        });
    }

    /// We created `pod`; the API answered with `rv`.
    pub fn created(&self, key: &str, pod: &str, rv: Option<&str>) {
        if let Some(rv) = number(rv) {
            self.pod(key, pod, Want::Created(rv));
        }
    }

    /// We patched `pod` (metadata, spec, status or a subresource); the API answered with `rv`.
    pub fn written(&self, key: &str, pod: &str, rv: Option<&str>) {
        if let Some(rv) = number(rv) {
            self.pod(key, pod, Want::Written(rv));
        }
    }

    /// We deleted `pod` with `uid`.
    pub fn deleted(&self, key: &str, pod: &str, uid: &str) {
        self.pod(key, pod, Want::Deleted(uid.to_string()));
    }

    /// We wrote the TApp (defaults or status); the API answered with `rv`.
    pub fn tapp_written(&self, key: &str, rv: Option<&str>) {
        if let Some(rv) = number(rv) {
            self.with(key, |e| e.tapp = Some((rv, Instant::now() + self.ttl)));
        }
    }

    /// Forgets everything about a TApp (deleted).
    pub fn forget(&self, key: &str) {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Drops the expectations the caches now meet (or whose TTL is over) and returns how many
    /// are still unmet, given the cached TApp's resourceVersion and its cached pods.
    pub fn unmet<'a>(
        &self,
        key: &str,
        tapp_rv: Option<&str>,
        pods: impl IntoIterator<Item = &'a ObjectMeta>,
    ) -> usize {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = all.get_mut(key) else {
            return 0;
        };
        let now = Instant::now();
        let cached_tapp = number(tapp_rv);
        if let Some((rv, until)) = e.tapp
            && (now >= until || cached_tapp.is_none_or(|c| c >= rv))
        {
            e.tapp = None;
        }
        if !e.pods.is_empty() {
            let by_name: HashMap<&str, &ObjectMeta> = pods
                .into_iter()
                .filter_map(|p| p.name.as_deref().map(|n| (n, p)))
                .collect();
            e.pods.retain(|name, (want, until)| {
                if now >= *until {
                    tracing::debug!(tapp = key, pod = %name, ?want, "expectation expired");
                    return false;
                }
                let cached = by_name.get(name.as_str());
                let met =
                    match want {
                        Want::Created(rv) => cached
                            .is_some_and(|p| number(p.resource_version.as_deref()) >= Some(*rv)),
                        Want::Written(rv) => cached
                            .is_none_or(|p| number(p.resource_version.as_deref()) >= Some(*rv)),
                        Want::Deleted(uid) => cached.is_none_or(|p| {
                            p.uid.as_deref() != Some(uid.as_str()) || p.deletion_timestamp.is_some()
                        }),
                    };
                !met
            });
        }
        let unmet = e.pods.len() + usize::from(e.tapp.is_some());
        if unmet == 0 {
            all.remove(key);
        }
        unmet
    }

    /// Whether anything is expected for the TApp `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Number of TApps with unmet expectations (for tests and debugging).
    pub fn len(&self) -> usize {
        self.all.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no TApp has expectations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use addon_common::k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(name: &str, uid: &str, rv: &str, terminating: bool) -> Pod {
        let ts = terminating.then_some("2026-01-01T00:00:00Z");
        serde_json::from_value(json!({"metadata": {"name": name, "uid": uid,
            "resourceVersion": rv, "deletionTimestamp": ts}}))
        .expect("pod")
    }

    #[test]
    fn each_kind_of_write_is_met_by_what_the_cache_shows() {
        let x = Expectations::new(Duration::from_secs(60));
        let k = "ns/t";
        assert_eq!(x.unmet(k, Some("1"), []), 0, "nothing expected");

        // Created: unmet until the pod is cached at the created version or later.
        x.created(k, "t-0", Some("10"));
        assert_eq!(x.unmet(k, Some("1"), []), 1);
        assert_eq!(
            x.unmet(k, Some("1"), [&pod("t-0", "old", "9", false).metadata]),
            1
        );
        assert_eq!(
            x.unmet(k, Some("1"), [&pod("t-0", "u0", "10", false).metadata]),
            0
        );
        assert!(x.is_empty());

        // Written: unmet on an older version; met by a newer one or by the pod's absence.
        x.written(k, "t-0", Some("20"));
        assert_eq!(
            x.unmet(k, None, [&pod("t-0", "u0", "19", false).metadata]),
            1
        );
        assert_eq!(
            x.unmet(k, None, [&pod("t-0", "u0", "21", false).metadata]),
            0
        );
        x.written(k, "t-0", Some("30"));
        assert_eq!(x.unmet(k, None, []), 0, "deleted by someone else meanwhile");

        // Deleted: met when gone, terminating, or replaced by a pod with another UID.
        x.deleted(k, "t-0", "u0");
        assert_eq!(
            x.unmet(k, None, [&pod("t-0", "u0", "40", false).metadata]),
            1
        );
        assert_eq!(
            x.unmet(k, None, [&pod("t-0", "u0", "41", true).metadata]),
            0
        );
        x.deleted(k, "t-0", "u0");
        assert_eq!(
            x.unmet(k, None, [&pod("t-0", "u1", "42", false).metadata]),
            0
        );

        // The TApp itself.
        x.tapp_written(k, Some("50"));
        assert_eq!(x.unmet(k, Some("49"), []), 1);
        assert_eq!(x.unmet(k, Some("50"), []), 0);
    }

    #[test]
    fn a_later_write_supersedes_and_other_tapps_are_independent() {
        let x = Expectations::new(Duration::from_secs(60));
        x.created("ns/a", "a-0", Some("5"));
        x.written("ns/a", "a-0", Some("7"));
        x.created("ns/b", "b-0", Some("6"));
        assert_eq!(
            x.unmet("ns/a", None, [&pod("a-0", "u", "6", false).metadata]),
            1
        );
        assert_eq!(
            x.unmet("ns/a", None, [&pod("a-0", "u", "7", false).metadata]),
            0
        );
        assert_eq!(x.unmet("ns/b", None, []), 1);
        x.forget("ns/b");
        assert!(x.is_empty());
    }

    #[test]
    fn unmet_expectations_expire_so_a_lost_event_cannot_stall_a_tapp() {
        let x = Expectations::new(Duration::ZERO);
        x.created("ns/a", "a-0", Some("5"));
        x.tapp_written("ns/a", Some("9"));
        assert_eq!(x.unmet("ns/a", Some("1"), []), 0);
        assert!(x.is_empty());
    }

    #[test]
    fn versions_that_are_not_numbers_are_not_waited_for() {
        let x = Expectations::new(Duration::from_secs(60));
        x.created("ns/a", "a-0", Some("opaque"));
        x.written("ns/a", "a-0", None);
        x.tapp_written("ns/a", Some("x"));
        assert!(x.is_empty());
    }
}
