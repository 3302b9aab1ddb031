//! Release-policy decisions, pure: what happens to a pod's IP when the pod goes
//! ([`on_release`]), and whether a pod may get a new IP at all ([`admit`], [`deployment_quota`]).
//! Each row of the reference's policy table is a test below.

use addon_common::api::galaxy::ReleasePolicy;

use crate::key::{AppKind, KeyObj, ordinal};

/// What is known about the pod's workload when its IP is released.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadFacts {
    /// `spec.replicas` of the workload (for a pool with a size: that size); `None` when the
    /// workload does not exist (or has no replica source).
    pub replicas: Option<i64>,
    /// IPs currently held under the app's (or pool's) prefix, this one included.
    pub app_ips: usize,
    /// IPs of the app that were borrowed during a rolling update and are still marked so.
    pub borrowed: usize,
}

/// The fate of a released pod's IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Free the IP (delete the FloatingIP).
    Free,
    /// Re-key the IP to this app or pool prefix, clearing node and UID (reserve for the app).
    ReserveForApp(String),
    /// Keep the pod key, clear node and UID (the pod of the same name gets it back).
    KeepForPod,
    /// Free the IP and clear the borrowed mark of another IP of the app (the end of a surge:
    /// the app keeps as many IPs as before the rolling update).
    FreeSurplus,
}

/// Decides what happens to `key`'s IP when its pod is deleted or finishes.
pub fn on_release(policy: ReleasePolicy, key: &KeyObj, facts: &WorkloadFacts) -> Release {
    let deployment_like = key.pool.is_some() || key.is_deployment();
    match policy {
        ReleasePolicy::Default => Release::Free,
        ReleasePolicy::Immutable => {
            if deployment_like {
                match facts.replicas {
                    None | Some(0) => Release::Free,
                    Some(r) if facts.app_ips as i64 > r => {
                        if facts.borrowed > 0 {
                            Release::FreeSurplus
                        } else {
                            Release::Free
                        }
                    }
                    Some(_) => Release::ReserveForApp(key.pool_app_prefix()),
                }
            } else if key.kind == Some(AppKind::Bare) {
                // Immutable bare pods are rejected at filter; if one got an IP anyway, free it.
                Release::Free
            } else {
                match (facts.replicas, ordinal(&key.pod)) {
                    (None, _) | (_, None) => Release::Free,
                    (Some(r), Some(n)) if i64::from(n) >= r => Release::Free,
                    _ => Release::KeepForPod,
                }
            }
        }
        ReleasePolicy::Never => {
            if deployment_like {
                if facts.borrowed > 0 && facts.replicas.is_some_and(|r| facts.app_ips as i64 > r) {
                    Release::FreeSurplus
                } else {
                    Release::ReserveForApp(key.pool_app_prefix())
                }
            } else {
                Release::KeepForPod
            }
        }
    }
}

/// Why a pod may not get an IP under its policy.
pub fn admit(policy: ReleasePolicy, key: &KeyObj, multi_ip: bool) -> Result<(), String> {
    if key.pool.is_some() || policy == ReleasePolicy::Default {
        if key.pool.is_some() && multi_ip {
            return Err("request_ip_range is not supported with an IP pool".into());
        }
        return Ok(());
    }
    match &key.kind {
        Some(AppKind::Deployment) if multi_ip => Err(format!(
            "request_ip_range is not supported for deployments with the {policy} release policy"
        )),
        Some(AppKind::Bare) if policy == ReleasePolicy::Immutable => Err(format!(
            "NoReplicas: pod {}/{} has the immutable release policy but no workload to count replicas from",
            key.namespace, key.pod
        )),
        Some(AppKind::Bare) if ordinal(&key.pod).is_none() => Err(format!(
            "NotStatefulWorkload: pod {}/{} has the never release policy, its name must end with -<number>",
            key.namespace, key.pod
        )),
        _ => Ok(()),
    }
}

/// The quota decision for a new IP of a Deployment (or pool) with a non-default policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quota {
    /// A new IP may be allocated.
    Allocate,
    /// A new IP may be allocated, borrowed for a rolling-update surge pod (marked; the app's
    /// surplus is freed when an old pod goes).
    Borrow,
    /// No new IP: the app holds all it may.
    Wait(String),
}

/// Whether a Deployment (or pool) pod without a reserved IP may get a new one.
///
/// `used` is the number of IPs under the app/pool prefix; `limit` the Deployment's replicas
/// (or the Pool's size when it has one); `surge` the Deployment's resolved maxSurge during a
/// rolling update (0 otherwise, and for pools).
pub fn deployment_quota(app: &str, used: usize, limit: Option<i64>, surge: i64) -> Quota {
    let Some(limit) = limit else {
        return Quota::Allocate;
    };
    let used = used as i64;
    if used < limit {
        Quota::Allocate
    } else if used < limit + surge {
        Quota::Borrow
    } else {
        Quota::Wait(format!(
            "{app} has allocated {used} ips with replicas of {limit}, wait for releasing"
        ))
    }
}

/// What of a Deployment tells whether a rollout is in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.updatedReplicas`: pods of the newest ReplicaSet.
    pub updated_replicas: i64,
    /// `status.replicas`: pods of every ReplicaSet of the Deployment.
    pub status_replicas: i64,
}

impl Rollout {
    /// A rollout is in progress while the controller has not seen the latest spec, the newest
    /// ReplicaSet has fewer pods than wanted, or pods of older ReplicaSets remain (what
    /// `kubectl rollout status` waits for as "old replicas pending termination"). A pod
    /// deleted and replaced outside a rollout matches none of these.
    pub fn in_progress(&self) -> bool {
        self.generation > self.observed_generation
            || self.updated_replicas < self.replicas
            || self.status_replicas > self.updated_replicas
    }
}

/// Kubernetes' resolution of a Deployment's maxSurge: an int, or a percentage of the replicas
/// rounded up; default 25%.
pub fn resolve_max_surge(value: Option<&str>, replicas: i64) -> i64 {
    let value = value.unwrap_or("25%");
    if let Some(pct) = value.strip_suffix('%') {
        let pct: i64 = pct.trim().parse().unwrap_or(25);
        (replicas * pct + 99) / 100
    } else {
        value.trim().parse().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReleasePolicy::{Default as P0, Immutable as P1, Never as P2};

    fn key(kind: AppKind, pod: &str) -> KeyObj {
        KeyObj::pod(kind, "ns", "app", pod, None)
    }

    fn facts(replicas: Option<i64>, app_ips: usize) -> WorkloadFacts {
        WorkloadFacts {
            replicas,
            app_ips,
            borrowed: 0,
        }
    }

    /// Every row of the reference's release-policy table.
    #[test]
    fn release_table() {
        let dp = key(AppKind::Deployment, "app-5d4f-x");
        let sts = key(AppKind::StatefulSet, "app-1");
        let tapp = key(AppKind::TApp, "app-3");
        let crd = key(AppKind::Other("cloneset".into()), "app-0");
        let bare = key(AppKind::Bare, "solo-2");
        let pool = KeyObj::pod(AppKind::Deployment, "ns", "app", "app-5d4f-x", Some("p1"));
        let reserve_dp = Release::ReserveForApp("dp_ns_app_".into());
        let table: Vec<(&str, ReleasePolicy, &KeyObj, WorkloadFacts, Release)> = vec![
            // policy 0: always released
            ("0 dp", P0, &dp, facts(Some(3), 1), Release::Free),
            ("0 sts", P0, &sts, facts(Some(3), 1), Release::Free),
            ("0 tapp", P0, &tapp, facts(Some(3), 1), Release::Free),
            ("0 bare", P0, &bare, facts(None, 1), Release::Free),
            ("0 pool", P0, &pool, facts(Some(3), 1), Release::Free),
            // immutable, deployment
            ("1 dp missing", P1, &dp, facts(None, 1), Release::Free),
            (
                "1 dp scaled to 0",
                P1,
                &dp,
                facts(Some(0), 1),
                Release::Free,
            ),
            (
                "1 dp more ips than replicas",
                P1,
                &dp,
                facts(Some(2), 3),
                Release::Free,
            ),
            (
                "1 dp within replicas",
                P1,
                &dp,
                facts(Some(3), 3),
                reserve_dp.clone(),
            ),
            (
                "1 dp fewer ips",
                P1,
                &dp,
                facts(Some(3), 1),
                reserve_dp.clone(),
            ),
            // immutable, sts / tapp / crd workload
            ("1 sts missing", P1, &sts, facts(None, 1), Release::Free),
            (
                "1 sts ordinal >= replicas",
                P1,
                &sts,
                facts(Some(1), 1),
                Release::Free,
            ),
            (
                "1 sts ordinal < replicas",
                P1,
                &sts,
                facts(Some(2), 1),
                Release::KeepForPod,
            ),
            (
                "1 tapp ordinal < replicas",
                P1,
                &tapp,
                facts(Some(4), 1),
                Release::KeepForPod,
            ),
            (
                "1 tapp scaled below",
                P1,
                &tapp,
                facts(Some(3), 1),
                Release::Free,
            ),
            (
                "1 crd with scale",
                P1,
                &crd,
                facts(Some(1), 1),
                Release::KeepForPod,
            ),
            ("1 crd missing", P1, &crd, facts(None, 1), Release::Free),
            // immutable, bare pod (rejected at filter; freed if it ever got one)
            ("1 bare", P1, &bare, facts(None, 1), Release::Free),
            // never
            ("2 dp", P2, &dp, facts(Some(3), 3), reserve_dp.clone()),
            ("2 dp deleted", P2, &dp, facts(None, 3), reserve_dp),
            ("2 sts", P2, &sts, facts(Some(0), 1), Release::KeepForPod),
            (
                "2 sts deleted",
                P2,
                &sts,
                facts(None, 1),
                Release::KeepForPod,
            ),
            ("2 tapp", P2, &tapp, facts(None, 1), Release::KeepForPod),
            ("2 bare", P2, &bare, facts(None, 1), Release::KeepForPod),
            (
                "2 pool",
                P2,
                &pool,
                facts(Some(2), 5),
                Release::ReserveForApp("pool__p1_".into()),
            ),
        ];
        for (name, policy, key, facts, want) in table {
            assert_eq!(on_release(policy, key, &facts), want, "{name}");
        }
    }

    #[test]
    fn surge_surplus_is_freed_when_the_old_pod_goes() {
        let dp = key(AppKind::Deployment, "app-5d4f-x");
        let f = WorkloadFacts {
            replicas: Some(2),
            app_ips: 3,
            borrowed: 1,
        };
        assert_eq!(on_release(P1, &dp, &f), Release::FreeSurplus);
        assert_eq!(on_release(P2, &dp, &f), Release::FreeSurplus);
        // never keeps scale-down IPs when nothing was borrowed
        let f = WorkloadFacts {
            replicas: Some(1),
            app_ips: 3,
            borrowed: 0,
        };
        assert_eq!(
            on_release(P2, &dp, &f),
            Release::ReserveForApp("dp_ns_app_".into())
        );
    }

    #[test]
    fn admission_table() {
        let bare_named = key(AppKind::Bare, "solo-2");
        let bare = key(AppKind::Bare, "solo");
        let dp = key(AppKind::Deployment, "app-x");
        let sts = key(AppKind::StatefulSet, "app-0");
        assert!(admit(P0, &bare, false).is_ok());
        assert!(
            admit(P0, &dp, true).is_ok(),
            "multi-IP with the default policy"
        );
        assert!(
            admit(P1, &bare_named, false)
                .expect_err("no replicas")
                .contains("NoReplicas")
        );
        assert!(
            admit(P2, &bare, false)
                .expect_err("name")
                .contains("NotStatefulWorkload")
        );
        assert!(admit(P2, &bare_named, false).is_ok());
        assert!(admit(P1, &dp, true).is_err());
        assert!(admit(P1, &dp, false).is_ok());
        assert!(admit(P1, &sts, true).is_ok());
    }

    #[test]
    fn quota_and_surge() {
        assert_eq!(deployment_quota("dp", 5, None, 0), Quota::Allocate);
        assert_eq!(deployment_quota("dp", 1, Some(2), 0), Quota::Allocate);
        assert_eq!(deployment_quota("dp", 2, Some(2), 1), Quota::Borrow);
        match deployment_quota("deployment ns/app", 2, Some(2), 0) {
            Quota::Wait(m) => assert_eq!(
                m,
                "deployment ns/app has allocated 2 ips with replicas of 2, wait for releasing"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            deployment_quota("dp", 3, Some(2), 1),
            Quota::Wait(_)
        ));
        assert_eq!(resolve_max_surge(None, 3), 1);
        assert_eq!(resolve_max_surge(Some("50%"), 3), 2);
        assert_eq!(resolve_max_surge(Some("0"), 3), 0);
        assert_eq!(resolve_max_surge(Some("2"), 3), 2);
        assert_eq!(resolve_max_surge(Some("0%"), 3), 0);
    }

    #[test]
    fn rollout_in_progress_table() {
        let done = Rollout {
            generation: 2,
            observed_generation: 2,
            replicas: 2,
            updated_replicas: 2,
            status_replicas: 2,
        };
        assert!(!done.in_progress(), "complete");
        for (what, r) in [
            (
                "spec changed, not yet observed",
                Rollout {
                    generation: 3,
                    ..done
                },
            ),
            (
                "new ReplicaSet not yet scaled up",
                Rollout {
                    updated_replicas: 1,
                    status_replicas: 3,
                    ..done
                },
            ),
            (
                "new ReplicaSet complete, an old pod left",
                Rollout {
                    status_replicas: 3,
                    ..done
                },
            ),
        ] {
            assert!(r.in_progress(), "{what}");
        }
    }
}
