//! Scaling a target: through its scale subresource (found by discovery, cached), or — for an
//! `autoscaling` HorizontalPodAutoscaler target — by moving the HPA's bounds.

use std::{collections::HashMap, sync::Mutex};

use addon_common::api::cronhpa::CrossVersionObjectReference;
use addon_common::k8s_openapi::api::autoscaling::{v1::Scale, v2::HorizontalPodAutoscaler};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
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

/// Scales targets; holds the discovery cache.
pub struct Scaler {
    client: Client,
    /// (apiVersion, kind) → resource; only kinds with a scale subresource are cached.
    cache: Mutex<HashMap<(String, String), ApiResource>>,
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
        }
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

    /// Sets the replicas of `target` (in `namespace`) to `replicas`.
    pub async fn scale(
        &self,
        namespace: &str,
        target: &CrossVersionObjectReference,
        replicas: i32,
    ) -> Result<Scaled> {
        let api_version = Self::api_version(target);
        if target.kind == "HorizontalPodAutoscaler" && api_version.starts_with("autoscaling/") {
            return self.scale_hpa(namespace, &target.name, replicas).await;
        }
        let ar = self.resolve(&api_version, &target.kind).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let name = &target.name;
        let label = format!("{} {namespace}/{name}", target.kind);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let scale: Scale = match api.get_scale(name).await {
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
            let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if current == replicas {
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

    async fn scale_hpa(&self, namespace: &str, name: &str, replicas: i32) -> Result<Scaled> {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
        let label = format!("HorizontalPodAutoscaler {namespace}/{name}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let hpa = api.get(name).await.map_err(|source| Error::GetScale {
                target: label.clone(),
                source,
            })?;
            let spec = hpa.spec.clone().unwrap_or_default();
            let annotated = hpa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_MAX_ANNOTATION))
                .and_then(|v| v.parse::<i32>().ok());
            let Some(bounds) =
                hpa_bounds(spec.min_replicas, spec.max_replicas, annotated, replicas)
            else {
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
}
