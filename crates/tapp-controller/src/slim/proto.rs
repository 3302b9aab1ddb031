//! [`SlimPod`] from Kubernetes' protobuf encoding of a pod (`application/vnd.kubernetes.protobuf`).
//!
//! The same fields as the JSON decoder keeps, read by field number (k8s.io/api's
//! `generated.proto`); everything else, managedFields included, is stepped over by its
//! length. The whole spec of a pod whose hash labels are not ours is not decoded here:
//! [`Decoded::NeedsWholeSpec`] tells the caller to read that pod as JSON.

use std::collections::BTreeMap;

use addon_common::protowire::{Fields, WireError, map_entry, time};
use k8s_openapi::api::core::v1::{PodCondition, ResourceClaim, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::{
    IN_PLACE_UPDATE_READY_CONDITION, LAST_APPLIED, Pairs, SlimContainer, SlimContainerStatus,
    SlimPod, SlimSpec, SlimStatus, SpecView,
};
use crate::hash::has_own_hashes;

/// A decoded pod, and whether it holds everything the controller keeps.
#[derive(Debug)]
pub enum Decoded {
    /// Everything the controller keeps of the pod (always so from JSON).
    Complete(SlimPod),
    /// From protobuf, a pod whose hash labels are not ours: the controller keeps its whole
    /// spec (adoption compares it with the template field by field), which is read from its
    /// JSON. The slim pod is complete but for that.
    NeedsWholeSpec(SlimPod),
}

impl SlimPod {
    /// Decodes a `Pod` message (the raw bytes inside its `k8s\0` envelope).
    pub fn from_protobuf(msg: &[u8]) -> Result<Decoded, WireError> {
        let (mut meta, mut spec, mut status) = (None, None, None);
        for field in Fields::new(msg) {
            match field? {
                (1, w) => meta = Some(read_meta(w.bytes()?)?),
                (2, w) => spec = Some(read_spec(w.bytes()?)?),
                (3, w) => status = Some(read_status(w.bytes()?)?),
                _ => {}
            }
        }
        let (metadata, labels, annotations) = meta.unwrap_or_default();
        let pod = SlimPod {
            metadata,
            labels,
            annotations,
            spec: spec.map(SpecView::Slim),
            status,
        };
        Ok(if has_own_hashes(&pod) || pod.spec.is_none() {
            Decoded::Complete(pod)
        } else {
            Decoded::NeedsWholeSpec(pod)
        })
    }
}

/// Go writes unset strings as empty ones; JSON omits them.
fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn timestamp(msg: &[u8]) -> Result<Option<Time>, WireError> {
    time(msg)?
        .map(|(seconds, nanos)| {
            k8s_openapi::jiff::Timestamp::new(seconds, nanos)
                .map(Time)
                .map_err(|_| WireError("time out of range"))
        })
        .transpose()
}

/// How many times each of `numbers` occurs in `msg`: lists are allocated at their size (a
/// list grown by pushes and shrunk to fit costs two reallocations, which showed in profiles).
fn counts<const N: usize>(msg: &[u8], numbers: [u32; N]) -> Result<[usize; N], WireError> {
    let mut out = [0; N];
    for field in Fields::new(msg) {
        let (n, _) = field?;
        if let Some(i) = numbers.iter().position(|m| *m == n) {
            out[i] += 1;
        }
    }
    Ok(out)
}

/// A map entry of strings as a pair.
fn pair(entry: &[u8]) -> Result<(Box<str>, Box<str>), WireError> {
    let (key, value) = map_entry(entry)?;
    let value = value.map(|v| v.str()).transpose()?.unwrap_or_default();
    Ok((key.into(), value.into()))
}

/// The kept metadata, labels and annotations (less the last-applied configuration), as
/// [`super::SlimMeta::split`] gives them from JSON.
fn read_meta(msg: &[u8]) -> Result<(ObjectMeta, Option<Pairs>, Option<Pairs>), WireError> {
    let [n_labels, n_annotations, n_owners, n_finalizers] = counts(msg, [11, 12, 13, 14])?;
    let mut m = ObjectMeta::default();
    let mut labels = Vec::with_capacity(n_labels);
    let mut annotations = Vec::with_capacity(n_annotations);
    let mut owners = Vec::with_capacity(n_owners);
    let mut finalizers = Vec::with_capacity(n_finalizers);
    for field in Fields::new(msg) {
        match field? {
            (1, w) => m.name = text(w.str()?),
            (3, w) => m.namespace = text(w.str()?),
            (5, w) => m.uid = text(w.str()?),
            (6, w) => m.resource_version = text(w.str()?),
            (7, w) => m.generation = Some(w.int()?).filter(|g| *g != 0),
            (8, w) => m.creation_timestamp = timestamp(w.bytes()?)?,
            (9, w) => m.deletion_timestamp = timestamp(w.bytes()?)?,
            (10, w) => m.deletion_grace_period_seconds = Some(w.int()?),
            (11, w) => labels.push(pair(w.bytes()?)?),
            (12, w) => {
                let (k, v) = pair(w.bytes()?)?;
                if &*k != LAST_APPLIED {
                    annotations.push((k, v));
                }
            }
            (13, w) => owners.push(read_owner(w.bytes()?)?),
            (14, w) => finalizers.push(w.str()?.to_owned()),
            _ => {}
        }
    }
    m.owner_references = (n_owners > 0).then_some(owners);
    m.finalizers = (n_finalizers > 0).then_some(finalizers);
    Ok((
        m,
        (n_labels > 0).then(|| Pairs::from_entries(labels)),
        (n_annotations > 0).then(|| Pairs::from_entries(annotations)),
    ))
}

fn read_owner(msg: &[u8]) -> Result<OwnerReference, WireError> {
    let mut o = OwnerReference::default();
    for field in Fields::new(msg) {
        match field? {
            (1, w) => o.kind = w.str()?.to_owned(),
            (3, w) => o.name = w.str()?.to_owned(),
            (4, w) => o.uid = w.str()?.to_owned(),
            (5, w) => o.api_version = w.str()?.to_owned(),
            (6, w) => o.controller = Some(w.bool()?),
            (7, w) => o.block_owner_deletion = Some(w.bool()?),
            _ => {}
        }
    }
    Ok(o)
}

fn read_spec(msg: &[u8]) -> Result<SlimSpec, WireError> {
    let [n_containers, n_init] = counts(msg, [2, 20])?;
    let mut s = SlimSpec {
        containers: Vec::with_capacity(n_containers),
        ..SlimSpec::default()
    };
    let mut init = Vec::with_capacity(n_init);
    for field in Fields::new(msg) {
        match field? {
            (2, w) => s.containers.push(read_container(w.bytes()?)?),
            (3, w) => s.restart_policy = text(w.str()?),
            (10, w) => s.node_name = text(w.str()?),
            (20, w) => init.push(read_container(w.bytes()?)?),
            _ => {}
        }
    }
    s.init_containers = (n_init > 0).then_some(init);
    Ok(s)
}

fn read_container(msg: &[u8]) -> Result<SlimContainer, WireError> {
    let mut c = SlimContainer::default();
    for field in Fields::new(msg) {
        match field? {
            (1, w) => c.name = w.str()?.to_owned(),
            (2, w) => c.image = text(w.str()?),
            (8, w) => c.resources = Some(read_resources(w.bytes()?)?),
            _ => {}
        }
    }
    Ok(c)
}

fn read_resources(msg: &[u8]) -> Result<ResourceRequirements, WireError> {
    let mut r = ResourceRequirements::default();
    for field in Fields::new(msg) {
        match field? {
            (n @ (1 | 2), w) => {
                let (name, value) = map_entry(w.bytes()?)?;
                // resource.Quantity {1: string}
                let mut quantity = String::new();
                if let Some(v) = value {
                    for q in Fields::new(v.bytes()?) {
                        if let (1, w) = q? {
                            quantity = w.str()?.to_owned();
                        }
                    }
                }
                let map = if n == 1 {
                    &mut r.limits
                } else {
                    &mut r.requests
                };
                map.get_or_insert_with(BTreeMap::new)
                    .insert(name.to_owned(), Quantity(quantity));
            }
            (3, w) => {
                let mut claim = ResourceClaim::default();
                for c in Fields::new(w.bytes()?) {
                    match c? {
                        (1, w) => claim.name = w.str()?.to_owned(),
                        (2, w) => claim.request = text(w.str()?),
                        _ => {}
                    }
                }
                r.claims.get_or_insert_with(Vec::new).push(claim);
            }
            _ => {}
        }
    }
    Ok(r)
}

fn read_status(msg: &[u8]) -> Result<SlimStatus, WireError> {
    let [n_conditions, n_statuses, n_init] = counts(msg, [2, 8, 10])?;
    let mut s = SlimStatus::default();
    // at most two are kept: Ready and the in-place gate
    let mut conditions = Vec::with_capacity(n_conditions.min(2));
    let mut statuses = Vec::with_capacity(n_statuses);
    let mut init = Vec::with_capacity(n_init);
    for field in Fields::new(msg) {
        match field? {
            (1, w) => s.phase = text(w.str()?),
            (2, w) => {
                if let Some(c) = read_condition(w.bytes()?)? {
                    conditions.push(c);
                }
            }
            (4, w) => s.reason = text(w.str()?),
            (8, w) => statuses.push(read_container_status(w.bytes()?)?),
            (10, w) => init.push(read_container_status(w.bytes()?)?),
            _ => {}
        }
    }
    conditions.shrink_to_fit();
    s.conditions = (n_conditions > 0).then_some(conditions);
    s.container_statuses = (n_statuses > 0).then_some(statuses);
    s.init_container_statuses = (n_init > 0).then_some(init);
    Ok(s)
}

/// The condition if it is one the planner reads (see `read_conditions` of the JSON decoder).
fn read_condition(msg: &[u8]) -> Result<Option<PodCondition>, WireError> {
    let kept = Fields::new(msg).any(|f| {
        matches!(f, Ok((1, w)) if w.str().is_ok_and(|t| t == "Ready" || t == IN_PLACE_UPDATE_READY_CONDITION))
    });
    if !kept {
        return Ok(None);
    }
    let mut c = PodCondition::default();
    for field in Fields::new(msg) {
        match field? {
            (1, w) => c.type_ = w.str()?.to_owned(),
            (2, w) => c.status = w.str()?.to_owned(),
            (3, w) => c.last_probe_time = timestamp(w.bytes()?)?,
            (4, w) => c.last_transition_time = timestamp(w.bytes()?)?,
            (5, w) => c.reason = text(w.str()?),
            (6, w) => c.message = text(w.str()?),
            (7, w) => c.observed_generation = Some(w.int()?).filter(|g| *g != 0),
            _ => {}
        }
    }
    Ok(Some(c))
}

fn read_container_status(msg: &[u8]) -> Result<SlimContainerStatus, WireError> {
    let mut c = SlimContainerStatus::default();
    for field in Fields::new(msg) {
        match field? {
            (1, w) => c.name = w.str()?.to_owned(),
            (6, w) => c.image = w.str()?.to_owned(),
            (7, w) => c.image_id = w.str()?.to_owned(),
            _ => {}
        }
    }
    Ok(c)
}
