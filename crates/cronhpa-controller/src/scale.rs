//! Scaling a target: through its scale subresource (found by discovery, cached), or — for an
//! `autoscaling` HorizontalPodAutoscaler target — by moving the HPA's bounds.
//!
//! **Read-ahead**: shortly before an occurrence the controller reads the target
//! ([`Scaler::prepare`]); at the scheduled time the write goes out at once with the
//! `resourceVersion` of that read (optimistic concurrency: if the target changed in between,
//! the write conflicts and is retried after a fresh read, as any conflict). A read-ahead only
//! replaces the read of the *first* attempt, only for the occurrence it was made for, and only
//! when it says a write is needed; "already at size" is always confirmed by a read at the
//! scheduled time, so a no-op never rests on a stale read.

use addon_common::kube;
use std::{collections::HashMap, sync::Mutex};

use addon_common::api::cronhpa::CrossVersionObjectReference;
use addon_common::k8s_openapi::api::autoscaling::{v1::Scale, v2::HorizontalPodAutoscaler};
use addon_common::kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{Error, Result, validate::default_api_version};

/// Annotation on an HPA whose `maxReplicas` the controller raised: the user's own value, put
/// back when a later schedule no longer needs more.
pub const ORIGINAL_MAX_ANNOTATION: &str = "extensions.tkestack.io/cronhpa-original-max-replicas";

/// How often a write that lost an optimistic-concurrency race is retried at once (re-reading
/// the target) before the reconcile fails and backs off.
const CONFLICT_RETRIES: usize = 3;

/// What a scale did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaled {
    /// Whether the target was written.
    pub changed: bool,
    /// Human-readable result for the status and the Event.
    pub message: String,
}

/// The new bounds of an HPA for a target: `minReplicas = target`; `maxReplicas` is raised to
/// `target` when below it (the user's value is remembered in [`ORIGINAL_MAX_ANNOTATION`]) and
/// put back to the user's value once the target fits under it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpaBounds {
    /// New `spec.minReplicas`.
    pub min: i32,
    /// New `spec.maxReplicas`.
    pub max: i32,
    /// New value of the annotation (`None`: remove it).
    pub original_max: Option<i32>,
}

/// Pure HPA-mode decision; `None` when the HPA already has the bounds.
pub fn hpa_bounds(
    current_min: Option<i32>,
    current_max: i32,
    annotated_original_max: Option<i32>,
    target: i32,
) -> Option<HpaBounds> {
    let original = annotated_original_max.unwrap_or(current_max);
    let max = original.max(target);
    let bounds = HpaBounds {
        min: target,
        max,
        original_max: (max != original).then_some(original),
    };
    // minReplicas defaults to 1 when absent.
    let unchanged = current_min.unwrap_or(1) == bounds.min
        && current_max == bounds.max
        && annotated_original_max == bounds.original_max;
    (!unchanged).then_some(bounds)
}

/// A target as read ahead of an occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// The scale subresource.
    Scale(Box<Scale>),
    /// HPA mode: the HorizontalPodAutoscaler.
    Hpa(Box<HorizontalPodAutoscaler>),
}

/// A read-ahead, kept until the occurrence it was made for fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Namespace of the target.
    pub namespace: String,
    /// The target.
    pub target: CrossVersionObjectReference,
    /// Scheduled time of the occurrence.
    pub occurrence: DateTime<Utc>,
    /// What was read.
    pub snapshot: Snapshot,
}

impl Prepared {
    /// Whether this read-ahead was made for `target` (in `namespace`) and `occurrence`.
    pub fn is_for(
        &self,
        namespace: &str,
        target: &CrossVersionObjectReference,
        occurrence: DateTime<Utc>,
    ) -> bool {
        self.namespace == namespace && self.target == *target && self.occurrence == occurrence
    }

    /// The snapshot to use instead of the first read when setting `replicas`: only when it
    /// says a write is needed (an "already at size" must be confirmed by a fresh read).
    pub fn first_read(self, replicas: i32) -> Option<Snapshot> {
        let needs_write = match &self.snapshot {
            Snapshot::Scale(s) => scale_replicas(s) != replicas,
            Snapshot::Hpa(h) => hpa_bounds_for(h, replicas).is_some(),
        };
        needs_write.then_some(self.snapshot)
    }
}

fn scale_replicas(scale: &Scale) -> i32 {
    scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn hpa_bounds_for(hpa: &HorizontalPodAutoscaler, replicas: i32) -> Option<HpaBounds> {
    let spec = hpa.spec.as_ref();
    let annotated = hpa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_MAX_ANNOTATION))
        .and_then(|v| v.parse::<i32>().ok());
    hpa_bounds(
        spec.and_then(|s| s.min_replicas),
        spec.map_or(0, |s| s.max_replicas),
        annotated,
        replicas,
    )
}

/// Scales targets; holds the discovery cache and the read-aheads.
pub struct Scaler {
    client: Client,
    /// (apiVersion, kind) → resource; only kinds with a scale subresource are cached.
    cache: Mutex<HashMap<(String, String), ApiResource>>,
    /// Object key → read-ahead of its next occurrence (at most one per CronHPA).
    prepared: Mutex<HashMap<String, Prepared>>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict())
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

impl Scaler {
    /// A scaler using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    fn is_hpa(api_version: &str, target: &CrossVersionObjectReference) -> bool {
        target.kind == "HorizontalPodAutoscaler" && api_version.starts_with("autoscaling/")
    }

    /// Reads `target` ahead of `occurrence` for the CronHPA `key` (an object key), unless that
    /// is already done. A failed read is only logged: the occurrence then reads at its time.
    pub async fn prepare(
        &self,
        key: &str,
        namespace: &str,
        target: &CrossVersionObjectReference,
        occurrence: DateTime<Utc>,
    ) {
        let done = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|p| p.is_for(namespace, target, occurrence));
        if done {
            return;
        }
        let api_version = Self::api_version(target);
        let read = if Self::is_hpa(&api_version, target) {
            Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), namespace)
                .get(&target.name)
                .await
                .map(|h| Snapshot::Hpa(Box::new(h)))
                .map_err(|e| e.to_string())
        } else {
            match self.resolve(&api_version, &target.kind).await {
                Ok(ar) => {
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &ar)
                        .get_scale(&target.name)
                        .await
                        .map(|s| Snapshot::Scale(Box::new(s)))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        };
        match read {
            Ok(snapshot) => {
                self.prepared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        key.to_owned(),
                        Prepared {
                            namespace: namespace.to_owned(),
                            target: target.clone(),
                            occurrence,
                            snapshot,
                        },
                    );
            }
            Err(error) => {
                tracing::debug!(object = key, %error, "read-ahead failed; reading at the scheduled time");
            }
        }
    }

    /// Takes the read-ahead of `key` if it was made for this target and occurrence (a
    /// read-ahead is used once; one for another occurrence or target is dropped).
    fn take_prepared(
        &self,
        key: &str,
        namespace: &str,
        target: &CrossVersionObjectReference,
        occurrence: DateTime<Utc>,
    ) -> Option<Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .filter(|p| p.is_for(namespace, target, occurrence))
    }

    /// Drops the read-aheads of objects for which `keep` is false (deleted objects).
    pub fn retain_prepared(&self, keep: impl Fn(&str) -> bool) {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// Number of read-aheads held.
    pub fn prepared_len(&self) -> usize {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn api_version(target: &CrossVersionObjectReference) -> String {
        target
            .api_version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .or_else(|| default_api_version(&target.kind))
            .unwrap_or_default()
            .to_owned()
    }

    /// Finds the resource of `kind` in `api_version` and checks it has `/scale`.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<ApiResource> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(ar) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(ar.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| Error::Discovery {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                source,
            })?;
        if !caps.subresources.iter().any(|(s, _)| s.plural == "scale") {
            return Err(Error::NoScaleSubresource {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, ar.clone());
        Ok(ar)
    }

    fn forget(&self, api_version: &str, kind: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(api_version.to_owned(), kind.to_owned()));
    }

    /// Sets the replicas of `target` (in `namespace`) to `replicas` for the `occurrence` of
    /// the CronHPA `key`, using its read-ahead when there is a usable one.
    pub async fn scale(
        &self,
        key: &str,
        namespace: &str,
        target: &CrossVersionObjectReference,
        replicas: i32,
        occurrence: DateTime<Utc>,
    ) -> Result<Scaled> {
        let first = self
            .take_prepared(key, namespace, target, occurrence)
            .and_then(|p| p.first_read(replicas));
        let api_version = Self::api_version(target);
        if Self::is_hpa(&api_version, target) {
            let first = match first {
                Some(Snapshot::Hpa(h)) => Some(*h),
                _ => None,
            };
            return self
                .scale_hpa(namespace, &target.name, replicas, first)
                .await;
        }
        let mut first = match first {
            Some(Snapshot::Scale(s)) => Some(*s),
            _ => None,
        };
        let ar = self.resolve(&api_version, &target.kind).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let name = &target.name;
        let label = format!("{} {namespace}/{name}", target.kind);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let read = match first.take() {
                Some(s) => Ok(s),
                None => api.get_scale(name).await,
            };
            let scale: Scale = match read {
                Ok(s) => s,
                Err(source) => {
                    if is_not_found(&source) {
                        // The kind may have gone (CRD version removed): rediscover next time.
                        self.forget(&api_version, &target.kind);
                    }
                    return Err(Error::GetScale {
                        target: label,
                        source,
                    });
                }
            };
            if scale_replicas(&scale) == replicas {
                return Ok(Scaled {
                    changed: false,
                    message: format!("Already at {replicas} replicas"),
                });
            }
            // Keep metadata (resourceVersion) from the read: optimistic concurrency.
            let mut desired = scale.clone();
            desired.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
            match api
                .replace_scale(name, &PostParams::default(), &desired)
                .await
            {
                Ok(_) => {
                    return Ok(Scaled {
                        changed: true,
                        message: format!("New size: {replicas}"),
                    });
                }
                Err(source) if is_conflict(&source) && attempt < CONFLICT_RETRIES => {
                    tracing::debug!(target = %label, attempt, "scale conflict, re-reading");
                }
                Err(source) => {
                    return Err(Error::Rescale {
                        target: label,
                        replicas,
                        source,
                    });
                }
            }
        }
    }

    async fn scale_hpa(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
        mut first: Option<HorizontalPodAutoscaler>,
    ) -> Result<Scaled> {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
        let label = format!("HorizontalPodAutoscaler {namespace}/{name}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let hpa = match first.take() {
                Some(h) => h,
                None => api.get(name).await.map_err(|source| Error::GetScale {
                    target: label.clone(),
                    source,
                })?,
            };
            let Some(bounds) = hpa_bounds_for(&hpa, replicas) else {
                return Ok(Scaled {
                    changed: false,
                    message: format!("HPA already has minReplicas {replicas}"),
                });
            };
            let patch = json!({
                "metadata": {
                    "resourceVersion": hpa.metadata.resource_version,
                    "annotations": {
                        ORIGINAL_MAX_ANNOTATION: bounds.original_max.map(|v| v.to_string()),
                    },
                },
                "spec": {"minReplicas": bounds.min, "maxReplicas": bounds.max},
            });
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    return Ok(Scaled {
                        changed: true,
                        message: format!(
                            "New size: {replicas} (HPA minReplicas {}, maxReplicas {})",
                            bounds.min, bounds.max
                        ),
                    });
                }
                Err(source) if is_conflict(&source) && attempt < CONFLICT_RETRIES => {}
                Err(source) => {
                    return Err(Error::Rescale {
                        target: label,
                        replicas,
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_bounds_table() {
        // (min, max, annotation, target) → bounds
        let table = [
            // Raise min within max.
            ((Some(2), 10, None, 5), Some((5, 10, None))),
            // Already there.
            ((Some(5), 10, None, 5), None),
            // Absent min defaults to 1.
            ((None, 10, None, 1), None),
            // Target above max: raise max, remember the user's value.
            ((Some(2), 10, None, 60), Some((60, 60, Some(10)))),
            // Later, a smaller target: max back to the user's value, annotation removed.
            ((Some(60), 60, Some(10), 3), Some((3, 10, None))),
            // Still above the user's max: keep the annotation, follow the target.
            ((Some(60), 60, Some(10), 30), Some((30, 30, Some(10)))),
            // Zero (needs the HPAScaleToZero feature gate on the cluster).
            ((Some(1), 10, None, 0), Some((0, 10, None))),
        ];
        for ((min, max, ann, target), want) in table {
            let got = hpa_bounds(min, max, ann, target).map(|b| (b.min, b.max, b.original_max));
            assert_eq!(got, want, "{min:?} {max} {ann:?} {target}");
        }
    }

    fn prepared(snapshot: Snapshot) -> Prepared {
        Prepared {
            namespace: "default".into(),
            target: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            occurrence: DateTime::from_timestamp(1_704_182_400, 0).unwrap_or_default(),
            snapshot,
        }
    }

    fn scale(replicas: i32) -> Snapshot {
        Snapshot::Scale(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "resourceVersion": "7"},
                "spec": {"replicas": replicas}
            }))
            .expect("scale"),
        ))
    }

    fn hpa(min: i32, max: i32) -> Snapshot {
        Snapshot::Hpa(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "resourceVersion": "7"},
                "spec": {"minReplicas": min, "maxReplicas": max,
                         "scaleTargetRef": {"kind": "Deployment", "name": "web"}}
            }))
            .expect("hpa"),
        ))
    }

    #[test]
    fn a_read_ahead_is_used_only_for_its_occurrence_and_only_when_it_says_write() {
        let p = prepared(scale(3));
        let (ns, target, at) = (p.namespace.clone(), p.target.clone(), p.occurrence);
        assert!(p.is_for(&ns, &target, at));
        assert!(
            !p.is_for(&ns, &target, at + chrono::Duration::hours(1)),
            "other occurrence"
        );
        assert!(!p.is_for("other", &target, at), "other namespace");
        let other = CrossVersionObjectReference {
            name: "db".into(),
            ..target.clone()
        };
        assert!(!p.is_for(&ns, &other, at), "spec changed to another target");
        // (snapshot, target replicas) → used as the first read?
        let table = [
            (scale(3), 60, true),
            // Already at size per the read-ahead: confirmed by a fresh read instead.
            (scale(60), 60, false),
            (hpa(2, 100), 60, true),
            (hpa(60, 100), 60, false),
        ];
        for (snapshot, replicas, used) in table {
            let got = prepared(snapshot.clone()).first_read(replicas);
            assert_eq!(got.is_some(), used, "{snapshot:?} → {replicas}");
            if used {
                assert_eq!(got, Some(snapshot));
            }
        }
    }
}
