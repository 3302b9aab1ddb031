//! The pure planner: every decision of the TApp controller (reference A.3–A.7).
//!
//! `plan(tapp, observed, now, flags)` turns the TApp and what was observed of its pods, claims
//! and nodes into a [`Plan`]: defaults to write back, claims and pods to create, pods to delete
//! (gracefully or forcibly), readiness-gate conditions to write, in-place updates (images,
//! metadata, resources), the status, and when to look again. The executor only performs it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use addon_common::api::tapp::{
    API_VERSION, AppStatus, DEFAULT_FORCE_UPDATE_MAX_UNAVAILABLE, DEFAULT_MAX_UNAVAILABLE,
    DEFAULT_TEMPLATE_NAME, IN_PLACE_UPDATE_READY_CONDITION, IN_PLACE_UPDATE_STATE_ANNOTATION,
    INSTANCE_ID_LABEL, InstanceStatus, KIND, PORT_MAPPING_ANNOTATION,
    PersistentVolumeClaimRetentionPolicyType, READINESS_GATES_NOT_READY_REASON, TApp, TAppSpec,
    TAppStatus, TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL, claim_name, parse_instance_id, pod_name,
};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodReadinessGate,
    PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::hash::{
    Difference, HashMemo, RESIZE_HASH_ANNOTATION, TemplateHashes, compare, has_own_hashes,
};
use crate::pods::{
    PRE_UPDATE_IMAGE_IDS_ANNOTATION, PodView, condition, in_place_condition, instance_id, is_dying,
    is_ready, is_updating, phase, selector_matches, selector_string,
};

/// PodReady message written while the in-place readiness gate is False (the original's text).
pub const READINESS_GATES_NOT_READY_MESSAGE: &str =
    "the status of pod readiness gate \"tkestack.io/InPlaceUpdate\" is not \"True\", but False";
/// Pod status reason the node lifecycle controller sets on pods of unreachable nodes.
pub const NODE_LOST_REASON: &str = "NodeLost";
/// Requeue used when nothing is due but the observed state may go stale (force deletes that
/// wait on node health, which is not watched per TApp).
pub const NODE_RECHECK: Duration = Duration::from_secs(30);

/// Process flags that change decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// `--delete-pod-after-app-finish` (default true): keep finished batch pods until the whole
    /// app has finished.
    pub delete_pod_after_app_finish: bool,
    /// The cluster serves the pod `resize` subresource (in-place resource resize).
    pub resize_supported: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Self {
            delete_pod_after_app_finish: true,
            resize_supported: false,
        }
    }
}

/// What the executor observed, all owned by (controller reference to) the TApp.
#[derive(Debug, Clone)]
pub struct Observed<'a, P = Pod> {
    /// Pods controlled by the TApp (any [`PodView`]: `Pod`, or the cache's `SlimPod`).
    pub pods: Vec<&'a P>,
    /// Claims in the TApp's namespace (any owner; matched by name).
    pub pvcs: Vec<&'a PersistentVolumeClaim>,
    /// Node name -> Ready condition is True. `None` when nodes are not known (then pods are
    /// only force-deleted for the `NodeLost` reason).
    pub nodes: Option<&'a BTreeMap<String, bool>>,
    /// Template hashes remembered across reconciles (`None`: computed per reconcile). The
    /// plan is the same either way.
    pub hash_memo: Option<&'a HashMemo>,
}

impl<P> Default for Observed<'_, P> {
    fn default() -> Self {
        Self {
            pods: Vec::new(),
            pvcs: Vec::new(),
            nodes: None,
            hash_memo: None,
        }
    }
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Scale down, Killed, or a finished batch pod that migrates.
    Delete,
    /// The template changed in a way that cannot be applied in place.
    Recreate,
}

/// A pod deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct PodDelete {
    /// Pod name.
    pub name: String,
    /// Precondition UID.
    pub uid: String,
    /// Grace period 0 (pod stuck on a lost node).
    pub force: bool,
    /// Why.
    pub reason: DeleteReason,
}

/// A write of the `tkestack.io/InPlaceUpdate` condition (pods/status JSON patch).
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionWrite {
    /// Pod name.
    pub name: String,
    /// The new condition value.
    pub ready: bool,
    /// Strategic merge patch of the pod's status (conditions merge by type).
    pub patch: Value,
}

/// How a pod is updated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Only labels/annotations change (no restart, no budget).
    Metadata,
    /// Container images change (containers restart).
    Images,
    /// Container resources change through the `resize` subresource (maybe images too).
    Resize,
}

/// An in-place update of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUpdate {
    /// Pod name.
    pub name: String,
    /// Instance id.
    pub id: u32,
    /// What changes.
    pub kind: UpdateKind,
    /// JSON patch of the pod (guarded by a `test` of the UID).
    pub patch: Value,
    /// JSON patch for the `resize` subresource, for [`UpdateKind::Resize`].
    pub resize_patch: Option<Value>,
}

/// A change of a claim's owner references.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOwnership {
    /// Claim name.
    pub name: String,
    /// The new ownerReferences (merge patch replaces the list).
    pub owner_references: Vec<OwnerReference>,
}

/// Everything one reconcile should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// A JSON merge patch of the TApp with defaults to persist (reference A.4 step 1). When
    /// set, nothing else is planned: the next reconcile sees the defaulted object.
    pub defaults: Option<Value>,
    /// Claims to create (before the pods that mount them).
    pub create_pvcs: Vec<PersistentVolumeClaim>,
    /// Pods to create.
    pub create_pods: Vec<Pod>,
    /// Pods to delete.
    pub deletes: Vec<PodDelete>,
    /// Readiness-gate condition writes, done before deletes and updates.
    pub conditions: Vec<ConditionWrite>,
    /// In-place updates, done after the condition writes.
    pub updates: Vec<PodUpdate>,
    /// Claims to delete (`whenScaled: Delete`).
    pub delete_pvcs: Vec<String>,
    /// Claims whose owner references change (`whenDeleted`).
    pub claim_ownership: Vec<ClaimOwnership>,
    /// The status to write (`None` when the defaults must be written first).
    pub status: Option<TAppStatus>,
    /// Problems the user must fix (Warning events): reason and message.
    pub warnings: Vec<(String, String)>,
    /// When to reconcile again at the latest (grace periods, node rechecks).
    pub requeue_after: Option<Duration>,
    /// Instances whose pod runs their current template (rollout progress).
    pub updated_instances: u32,
    /// Instances that should be running.
    pub desired_running: u32,
}

// ---------------------------------------------------------------------------------------------
// Defaults (A.4 step 1)

/// The selector the controller defaults: template labels minus the hash labels.
pub fn default_selector_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.remove(TEMPLATE_HASH_LABEL);
    labels.remove(UNIQ_HASH_LABEL);
    labels
}

/// Pool names referenced by `templates`, `updateStrategy.template` or a non-"default"
/// `defaultTemplateName`.
fn referenced_templates(spec: &TAppSpec) -> BTreeSet<&str> {
    let mut used: BTreeSet<&str> = spec.templates.values().map(String::as_str).collect();
    if let Some(t) = spec.update_strategy.template.as_deref() {
        used.insert(t);
    }
    if spec.default_template_name != DEFAULT_TEMPLATE_NAME {
        used.insert(&spec.default_template_name);
    }
    used
}

/// The merge patch persisting the original's defaults, or `None` when all are set.
pub fn defaults_patch(tapp: &TApp) -> Option<Value> {
    let spec = &tapp.spec;
    let mut spec_patch = serde_json::Map::new();
    let mut patch = serde_json::Map::new();
    let template_labels = default_selector_labels(&spec.template);
    if spec.selector.is_none() && !template_labels.is_empty() {
        spec_patch.insert("selector".into(), json!({"matchLabels": template_labels}));
    }
    let mut strategy = serde_json::Map::new();
    if spec
        .update_strategy
        .template
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        let name = if spec.default_template_name.is_empty() {
            DEFAULT_TEMPLATE_NAME
        } else {
            &spec.default_template_name
        };
        strategy.insert("template".into(), json!(name));
    }
    if spec.update_strategy.max_unavailable.is_none() {
        strategy.insert("maxUnavailable".into(), json!(DEFAULT_MAX_UNAVAILABLE));
    }
    if spec
        .update_strategy
        .force_update
        .as_ref()
        .and_then(|f| f.max_unavailable.as_ref())
        .is_none()
    {
        strategy.insert(
            "forceUpdate".into(),
            json!({"maxUnavailable": DEFAULT_FORCE_UPDATE_MAX_UNAVAILABLE}),
        );
    }
    if !strategy.is_empty() {
        spec_patch.insert("updateStrategy".into(), Value::Object(strategy));
    }
    if spec.auto_delete_unused_template {
        let used = referenced_templates(spec);
        let unused: serde_json::Map<String, Value> = spec
            .template_pool
            .keys()
            .filter(|k| !used.contains(k.as_str()))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        if !unused.is_empty() {
            spec_patch.insert("templatePool".into(), Value::Object(unused));
        }
    }
    if !spec_patch.is_empty() {
        patch.insert("spec".into(), Value::Object(spec_patch));
    }
    let no_labels = tapp.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty);
    if no_labels && !template_labels.is_empty() {
        patch.insert("metadata".into(), json!({"labels": template_labels}));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

// ---------------------------------------------------------------------------------------------
// Status (A.3)

/// appStatus from the instance statuses (Go `genAppStatus`).
pub fn app_status(statuses: &BTreeMap<String, InstanceStatus>) -> AppStatus {
    use InstanceStatus as S;
    if statuses.is_empty() {
        return AppStatus::Pending;
    }
    let any = |wanted: &[S]| statuses.values().any(|s| wanted.contains(s));
    if any(&[
        S::NotCreated,
        S::Pending,
        S::Running,
        S::Killing,
        S::Unknown,
        S::PodFailed,
        S::PodSucc,
        S::Updating,
    ]) {
        AppStatus::Running
    } else if any(&[S::Failed]) {
        AppStatus::Failed
    } else if any(&[S::Succ]) {
        AppStatus::Succ
    } else {
        AppStatus::Killed
    }
}

/// Whether a completed pod of instance `id` should be recreated (Go `shouldPodMigrate`).
pub fn should_migrate(spec: &TAppSpec, pod: &impl PodView, id: &str) -> bool {
    if spec.never_migrate {
        return false;
    }
    let bound = pod.node_name().is_some_and(|n| !n.is_empty());
    let no_statuses = !pod.has_container_statuses();
    if bound && no_statuses {
        // Bound but no container ever ran: the kubelet rejected the pod.
        return true;
    }
    let policy = spec
        .template_for(id)
        .ok()
        .and_then(|t| t.spec.as_ref())
        .map_or_else(|| pod.restart_policy(), |s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    match policy {
        "OnFailure" => phase(pod) == "Failed",
        "Never" => false,
        _ => true,
    }
}

/// Status of the instance whose pod is `pod` (Go `getInstanceStatus`, per pod).
pub fn pod_instance_status(
    spec: &TAppSpec,
    prev: Option<InstanceStatus>,
    pod: &impl PodView,
    id: &str,
) -> InstanceStatus {
    use InstanceStatus as S;
    if is_dying(pod) && !matches!(prev, Some(S::Killed | S::Failed | S::Succ)) {
        return S::Killing;
    }
    match phase(pod) {
        "Running" => {
            if condition(pod, "Ready").is_none_or(|c| c.status == "True") {
                S::Running
            } else {
                S::Pending
            }
        }
        "Unknown" => S::Unknown,
        "Succeeded" if should_migrate(spec, pod, id) => S::PodSucc,
        "Succeeded" => S::Succ,
        "Failed" if should_migrate(spec, pod, id) => S::PodFailed,
        "Failed" => S::Failed,
        _ => S::Pending,
    }
}

/// Every instance's status: each pod's, then ids below replicas without a pod.
pub fn instance_statuses<P: PodView>(
    tapp: &TApp,
    pods: &BTreeMap<u32, &P>,
) -> BTreeMap<String, InstanceStatus> {
    use InstanceStatus as S;
    let prev = tapp.status.as_ref().map(|s| &s.statuses);
    let prev_of = |id: &str| prev.and_then(|p| p.get(id)).copied();
    let mut out = BTreeMap::new();
    for (id, pod) in pods {
        let key = id.to_string();
        let status = pod_instance_status(&tapp.spec, prev_of(&key), pod, &key);
        out.insert(key, status);
    }
    for id in 0..tapp.spec.replicas.max(0) as u32 {
        let key = id.to_string();
        if out.contains_key(&key) {
            continue;
        }
        let status = if tapp.spec.is_killed(&key) {
            S::Killed
        } else {
            match prev_of(&key) {
                Some(s @ (S::Killed | S::Failed | S::Succ)) => s,
                _ => S::NotCreated,
            }
        };
        out.insert(key, status);
    }
    out
}

/// Desired running and completed ids (Go `getDesiredInstance`).
pub fn desired_instances(tapp: &TApp, flags: &Flags) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let replicas = tapp.spec.replicas.max(0) as u32;
    let status = tapp.status.as_ref();
    let app_finished = status
        .and_then(|s| s.app_status)
        .is_some_and(AppStatus::is_finished);
    let keep_finished = !flags.delete_pod_after_app_finish || app_finished;
    let mut completed = BTreeSet::new();
    for id in 0..replicas {
        let key = id.to_string();
        let finished = keep_finished
            && status
                .and_then(|s| s.statuses.get(&key))
                .is_some_and(|s| matches!(s, InstanceStatus::Failed | InstanceStatus::Succ));
        if tapp.spec.is_killed(&key) || finished {
            completed.insert(id);
        }
    }
    let running = (0..replicas).filter(|id| !completed.contains(id)).collect();
    (running, completed)
}

/// Resolves an IntOrString budget against `total` (percent rounded up, like Go's
/// `GetValueFromIntOrPercent(…, true)`); invalid values count as 1.
pub fn resolve_budget(value: &IntOrString, total: usize) -> usize {
    match value {
        IntOrString::Int(i) => (*i).max(0) as usize,
        IntOrString::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<usize>().ok())
        {
            Some(p) => (p * total).div_ceil(100),
            None => 1,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Objects written (A.5)

fn owner_reference(tapp: &TApp) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        name: tapp.metadata.name.clone().unwrap_or_default(),
        uid: tapp.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// The pod of instance `id` created from `template` (reference A.5).
pub fn build_pod(tapp: &TApp, id: u32, template: &PodTemplateSpec, hashes: &TemplateHashes) -> Pod {
    let name = tapp.metadata.name.clone().unwrap_or_default();
    let key = id.to_string();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hashes.template.clone());
    labels.insert(UNIQ_HASH_LABEL.into(), hashes.uniq.clone());
    labels.insert(INSTANCE_ID_LABEL.into(), key.clone());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(RESIZE_HASH_ANNOTATION.into(), hashes.resize.clone());
    let mut spec = template.spec.clone().unwrap_or_default();
    let gates = spec.readiness_gates.get_or_insert_default();
    if !gates
        .iter()
        .any(|g| g.condition_type == IN_PLACE_UPDATE_READY_CONDITION)
    {
        gates.push(PodReadinessGate {
            condition_type: IN_PLACE_UPDATE_READY_CONDITION.into(),
        });
    }
    if let Some(service) = tapp.spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        spec.hostname = Some(pod_name(&name, &key));
        spec.subdomain = Some(service.into());
    }
    for claim in &tapp.spec.volume_claim_templates {
        let claim_template = claim.metadata.name.clone().unwrap_or_default();
        let volumes = spec.volumes.get_or_insert_default();
        volumes.retain(|v| v.name != claim_template);
        volumes.push(Volume {
            name: claim_template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&claim_template, &name, &key),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, &key)),
            namespace: tapp.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_reference(tapp)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn claim_owned_by_default(tapp: &TApp) -> bool {
    tapp.spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted)
        != Some(PersistentVolumeClaimRetentionPolicyType::Retain)
}

/// The claim of instance `id` from claim template `claim` (reference A.5).
pub fn build_pvc(tapp: &TApp, id: u32, claim: &PersistentVolumeClaim) -> PersistentVolumeClaim {
    let name = tapp.metadata.name.clone().unwrap_or_default();
    let template = claim.metadata.name.clone().unwrap_or_default();
    let mut labels = claim.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = tapp
        .spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
    {
        labels.extend(sel.clone());
    }
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(&template, &name, &id.to_string())),
            namespace: tapp.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: claim.metadata.annotations.clone(),
            owner_references: claim_owned_by_default(tapp).then(|| vec![owner_reference(tapp)]),
            ..ObjectMeta::default()
        },
        spec: claim.spec.clone(),
        status: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Patches

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Strategic merge patch of the pod status writing the in-place condition (and PodReady as
/// the original does). Conditions merge by `type`, so the patch replaces our condition or adds
/// it once, whatever the cache showed and whatever the kubelet wrote meanwhile (a JSON patch
/// appending to the list duplicated it on a stale cache). `metadata.uid` makes the API server
/// refuse the patch if the pod was replaced by a namesake (uid is immutable).
fn condition_patch(pod: &impl PodView, ready: bool, now: DateTime<Utc>) -> Value {
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = if ready { "True" } else { "False" };
    let mut conditions = vec![
        json!({"type": IN_PLACE_UPDATE_READY_CONDITION, "status": status, "lastTransitionTime": now_s}),
    ];
    let pod_ready = condition(pod, "Ready");
    if let Some(c) = pod_ready {
        let ours = c.reason.as_deref() == Some(READINESS_GATES_NOT_READY_REASON)
            && c.message.as_deref() == Some(READINESS_GATES_NOT_READY_MESSAGE);
        if !ready && c.status != "False" {
            conditions.push(json!({"type": "Ready", "status": "False", "lastTransitionTime": now_s,
                "reason": READINESS_GATES_NOT_READY_REASON, "message": READINESS_GATES_NOT_READY_MESSAGE}));
        } else if ready && c.status == "False" && ours {
            conditions.push(
                json!({"type": "Ready", "status": "True", "lastTransitionTime": now_s,
                "reason": null, "message": null}),
            );
        }
    }
    json!({"metadata": {"uid": pod.metadata().uid}, "status": {"conditions": conditions}})
}

/// JSON patch of an in-place update: images by container name (init containers too — the
/// original forgets them), merged labels and annotations (never removing any), the in-place
/// state annotation, the pre-update imageIDs, the live port mapping kept.
fn update_patch(live: &Pod, expected: &Pod, kind: UpdateKind) -> Value {
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": live.metadata.uid})];
    let mut image_ids = BTreeMap::new();
    let mut images_changed = false;
    if let (Some(ls), Some(es)) = (live.spec.as_ref(), expected.spec.as_ref()) {
        let statuses = live
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for (list, live_list, exp_list) in [
            ("containers", &ls.containers, &es.containers),
            (
                "initContainers",
                ls.init_containers.as_ref().unwrap_or(&Vec::new()),
                es.init_containers.as_ref().unwrap_or(&Vec::new()),
            ),
        ] {
            for (i, c) in live_list.iter().enumerate() {
                let Some(e) = exp_list.iter().find(|e| e.name == c.name) else {
                    continue;
                };
                if e.image != c.image {
                    images_changed = true;
                    ops.push(json!({"op": "test", "path": format!("/spec/{list}/{i}/name"), "value": c.name}));
                    ops.push(json!({"op": "replace", "path": format!("/spec/{list}/{i}/image"), "value": e.image}));
                    if list == "containers"
                        && let Some(s) = statuses.iter().find(|s| s.name == c.name)
                    {
                        image_ids.insert(c.name.clone(), s.image_id.clone());
                    }
                }
            }
        }
    }
    if live.metadata.labels.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    for (k, v) in expected.metadata.labels.iter().flatten() {
        if live.metadata.labels.as_ref().and_then(|l| l.get(k)) != Some(v) {
            ops.push(
                json!({"op": "add", "path": format!("/metadata/labels/{}", escape(k)), "value": v}),
            );
        }
    }
    let mut annotations = expected.metadata.annotations.clone().unwrap_or_default();
    // The live Galaxy port mapping wins over the template's.
    if let Some(pm) = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PORT_MAPPING_ANNOTATION))
    {
        annotations.insert(PORT_MAPPING_ANNOTATION.into(), pm.clone());
    }
    if images_changed || kind != UpdateKind::Metadata {
        annotations.insert(IN_PLACE_UPDATE_STATE_ANNOTATION.into(), "true".into());
    }
    if images_changed {
        annotations.insert(
            PRE_UPDATE_IMAGE_IDS_ANNOTATION.into(),
            serde_json::to_string(&image_ids).unwrap_or_default(),
        );
    }
    if live.metadata.annotations.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    for (k, v) in &annotations {
        if live.metadata.annotations.as_ref().and_then(|a| a.get(k)) != Some(v) {
            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}));
        }
    }
    Value::Array(ops)
}

/// JSON patch for the `resize` subresource: every container's resources from `expected`.
fn resize_patch(live: &Pod, expected: &Pod) -> Value {
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": live.metadata.uid})];
    if let (Some(ls), Some(es)) = (live.spec.as_ref(), expected.spec.as_ref()) {
        for (i, c) in ls.containers.iter().enumerate() {
            if let Some(e) = es.containers.iter().find(|e| e.name == c.name) {
                ops.push(json!({"op": "test", "path": format!("/spec/containers/{i}/name"), "value": c.name}));
                ops.push(
                    json!({"op": "add", "path": format!("/spec/containers/{i}/resources"),
                    "value": e.resources.clone().unwrap_or_default()}),
                );
            }
        }
    }
    Value::Array(ops)
}

fn images_differ(live: &Pod, expected: &Pod) -> bool {
    let images = |p: &Pod| -> BTreeMap<String, Option<String>> {
        p.spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect()
    };
    images(live) != images(expected)
}

// ---------------------------------------------------------------------------------------------
// The planner

/// What an existing pod needs to match its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Nothing.
    UpToDate,
    /// In-place update of the given kind.
    Update(UpdateKind),
    /// Delete and create again.
    Recreate,
}

/// Compares a live pod with the pod its template produces (hash labels for our own pods,
/// semantic comparison for pods whose hash labels another implementation wrote).
pub fn sync_needed(
    live: &impl PodView,
    expected: &Pod,
    hashes: &TemplateHashes,
    resize_supported: bool,
) -> Sync {
    if has_own_hashes(live) {
        if live.label(TEMPLATE_HASH_LABEL) == Some(hashes.template.as_str()) {
            return Sync::UpToDate;
        }
        if live.label(UNIQ_HASH_LABEL) == Some(hashes.uniq.as_str()) {
            return if images_differ(&live.to_pod(), expected) {
                Sync::Update(UpdateKind::Images)
            } else {
                Sync::Update(UpdateKind::Metadata)
            };
        }
        if resize_supported
            && live.annotation(RESIZE_HASH_ANNOTATION) == Some(hashes.resize.as_str())
        {
            return Sync::Update(UpdateKind::Resize);
        }
        return Sync::Recreate;
    }
    match compare(expected, &live.to_pod()) {
        Difference::None | Difference::Metadata => Sync::Update(UpdateKind::Metadata),
        Difference::Images => Sync::Update(UpdateKind::Images),
        Difference::Resources if resize_supported => Sync::Update(UpdateKind::Resize),
        Difference::Resources | Difference::Other => Sync::Recreate,
    }
}

/// A pod is available: in the desired running set, Running, Ready, not dying, not updating,
/// its in-place gate not False. (The executor plans only from caches that show its own
/// writes: see `expectations`.)
fn is_available(pod: &impl PodView) -> bool {
    phase(pod) == "Running"
        && !is_dying(pod)
        && !is_updating(pod)
        && is_ready(pod)
        && in_place_condition(pod) != Some(false)
}

fn node_lost<P>(pod: &impl PodView, observed: &Observed<'_, P>) -> bool {
    if pod.reason() == Some(NODE_LOST_REASON) {
        return true;
    }
    let node = pod.node_name().unwrap_or("");
    match observed.nodes {
        Some(nodes) => node.is_empty() || nodes.get(node) != Some(&true),
        None => false,
    }
}

/// Plans one reconcile of `tapp`.
pub fn plan<P: PodView>(
    tapp: &TApp,
    observed: &Observed<'_, P>,
    now: DateTime<Utc>,
    flags: &Flags,
) -> Plan {
    let mut plan = Plan::default();
    if let Some(patch) = defaults_patch(tapp) {
        plan.defaults = Some(patch);
        return plan;
    }
    let spec = &tapp.spec;
    let tapp_name = tapp.metadata.name.clone().unwrap_or_default();
    let replicas = spec.replicas.max(0) as u32;

    // Pods by id; only the pod named <tapp>-<id> counts for an id.
    let mut pods: BTreeMap<u32, &P> = BTreeMap::new();
    for pod in &observed.pods {
        if let Some(id) = instance_id(pod)
            && pod.metadata().name.as_deref()
                == Some(pod_name(&tapp_name, &id.to_string()).as_str())
        {
            pods.insert(id, pod);
        }
    }

    let statuses = instance_statuses(tapp, &pods);
    let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some(default_selector_labels(&spec.template)),
        match_expressions: None,
    });
    let (running, completed) = desired_instances(tapp, flags);
    plan.desired_running = running.len() as u32;

    // Per-template hashes and selector checks, computed once per template name (the
    // template itself is borrowed from the spec: nothing is cloned per instance).
    let mut resolved: BTreeMap<&str, Option<Arc<TemplateHashes>>> = BTreeMap::new();
    let mut resolve = |id: u32,
                       plan: &mut Plan|
     -> Option<(&PodTemplateSpec, Arc<TemplateHashes>)> {
        let key = id.to_string();
        let name = spec.template_name_for(&key);
        let template = spec.template_for(&key);
        let entry = resolved.entry(name).or_insert_with(|| {
            let template = match &template {
                Ok(t) => *t,
                Err(e) => {
                    plan.warnings
                        .push(("TemplateNotFound".into(), e.to_string()));
                    return None;
                }
            };
            let empty = BTreeMap::new();
            let labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .unwrap_or(&empty);
            if !selector_matches(&selector, labels) {
                plan.warnings.push((
                    "SelectorMismatch".into(),
                    format!("template {name:?} labels do not match spec.selector ({}); its instances are not created", selector_string(&selector)),
                ));
                return None;
            }
            Some(match (observed.hash_memo, tapp.metadata.uid.as_deref()) {
                (Some(memo), Some(uid)) => {
                    memo.hashes(uid, tapp.metadata.generation, name, template)
                }
                _ => Arc::new(TemplateHashes::of(template)),
            })
        });
        match (template, entry) {
            (Ok(t), Some(h)) => Some((t, h.clone())),
            _ => None,
        }
    };

    // Actions per instance (A.6).
    let rolling_template = spec.rolling_template_name().to_string();
    let mut syncs: Vec<(u32, Sync, Pod)> = Vec::new(); // budgeted updates/recreates
    let mut dying_force_wait = false;
    let pvc_names: BTreeSet<&str> = observed
        .pvcs
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let delete = |plan: &mut Plan, pod: &P, reason: DeleteReason| {
        plan.deletes.push(PodDelete {
            name: pod.metadata().name.clone().unwrap_or_default(),
            uid: pod.metadata().uid.clone().unwrap_or_default(),
            force: false,
            reason,
        });
    };
    let mut force_check = |plan: &mut Plan, pod: &P| {
        if spec.force_delete_pod {
            if node_lost(pod, observed) {
                plan.deletes.push(PodDelete {
                    name: pod.metadata().name.clone().unwrap_or_default(),
                    uid: pod.metadata().uid.clone().unwrap_or_default(),
                    force: true,
                    reason: DeleteReason::Delete,
                });
            } else {
                dying_force_wait = true;
            }
        }
    };

    for &id in &running {
        let key = id.to_string();
        match pods.get(&id) {
            None => {
                let Some((template, h)) = resolve(id, &mut plan) else {
                    continue;
                };
                for claim in &spec.volume_claim_templates {
                    let pvc = build_pvc(tapp, id, claim);
                    if !pvc_names.contains(pvc.metadata.name.as_deref().unwrap_or("")) {
                        plan.create_pvcs.push(pvc);
                    }
                }
                plan.create_pods.push(build_pod(tapp, id, template, &h));
            }
            Some(pod) if is_dying(pod) => force_check(&mut plan, pod),
            Some(pod) if matches!(phase(pod), "Succeeded" | "Failed") => {
                if should_migrate(spec, pod, &key) {
                    delete(&mut plan, pod, DeleteReason::Delete);
                }
            }
            Some(pod) => {
                let Some((template, h)) = resolve(id, &mut plan) else {
                    continue;
                };
                // The common case, checked before building the expected pod: our own pod of
                // the current template.
                if has_own_hashes(pod)
                    && pod.label(TEMPLATE_HASH_LABEL) == Some(h.template.as_str())
                {
                    plan.updated_instances += 1;
                    continue;
                }
                let expected = build_pod(tapp, id, template, &h);
                match sync_needed(pod, &expected, &h, flags.resize_supported) {
                    Sync::UpToDate => plan.updated_instances += 1,
                    Sync::Update(UpdateKind::Metadata) => {
                        // No container changes: no readiness protocol and no budget.
                        plan.updated_instances += 1;
                        plan.updates.push(PodUpdate {
                            name: pod.metadata().name.clone().unwrap_or_default(),
                            id,
                            kind: UpdateKind::Metadata,
                            patch: update_patch(&pod.to_pod(), &expected, UpdateKind::Metadata),
                            resize_patch: None,
                        });
                    }
                    sync => syncs.push((id, sync, expected)),
                }
            }
        }
    }
    for &id in &completed {
        if let Some(pod) = pods.get(&id) {
            if is_dying(pod) {
                force_check(&mut plan, pod);
            } else {
                delete(&mut plan, pod, DeleteReason::Delete);
            }
        }
    }
    for (&id, pod) in pods.range(replicas..) {
        let _ = id;
        if is_dying(pod) {
            force_check(&mut plan, pod);
        } else {
            delete(&mut plan, pod, DeleteReason::Delete);
        }
    }

    // Budgets (A.6 transformPodActions): force group first, then the rolling group in
    // ascending id order; both consume the same set of available pods.
    let mut available: BTreeSet<u32> = running
        .iter()
        .copied()
        .filter(|id| pods.get(id).is_some_and(is_available))
        .collect();
    let total = running.len();
    let force_budget = spec
        .update_strategy
        .force_update
        .as_ref()
        .and_then(|f| f.max_unavailable.clone())
        .unwrap_or_else(|| IntOrString::String(DEFAULT_FORCE_UPDATE_MAX_UNAVAILABLE.into()));
    let rolling_budget = spec
        .update_strategy
        .max_unavailable
        .clone()
        .unwrap_or(IntOrString::Int(DEFAULT_MAX_UNAVAILABLE));
    let force_min = total.saturating_sub(resolve_budget(&force_budget, total));
    let rolling_min = total.saturating_sub(resolve_budget(&rolling_budget, total));
    let (rolling, force): (Vec<_>, Vec<_>) = syncs
        .into_iter()
        .partition(|(id, _, _)| spec.template_name_for(&id.to_string()) == rolling_template);
    let mut approved: Vec<(u32, Sync, Pod)> = Vec::new();
    for (id, sync, expected) in force {
        let pod = pods[&id];
        // A pod already in the in-place protocol (gate False) was counted when it started.
        let in_protocol = in_place_condition(pod) == Some(false) && !is_updating(pod);
        if !in_protocol && available.len() <= force_min {
            continue;
        }
        available.remove(&id);
        approved.push((id, sync, expected));
    }
    for (id, sync, expected) in rolling {
        if available.contains(&id) {
            if available.len() <= rolling_min {
                continue;
            }
            available.remove(&id);
        }
        approved.push((id, sync, expected));
    }

    // Execution of approved actions and the in-place protocol (A.7).
    let grace = Duration::from_secs(
        spec.update_strategy
            .in_place_update_grace_period_seconds
            .unwrap_or(0)
            .max(0) as u64,
    );
    let mut gate_false: BTreeSet<u32> = BTreeSet::new();
    for (id, sync, expected) in approved {
        let pod = pods[&id];
        let name = pod.metadata().name.clone().unwrap_or_default();
        match sync {
            Sync::Recreate => {
                gate_false.insert(id);
                delete(&mut plan, pod, DeleteReason::Recreate);
            }
            Sync::Update(kind) => {
                gate_false.insert(id);
                let since = condition(pod, IN_PLACE_UPDATE_READY_CONDITION)
                    .filter(|c| c.status == "False")
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| to_chrono(t.0));
                let due = if grace.is_zero() {
                    Some(Duration::ZERO)
                } else {
                    match since {
                        Some(t) => {
                            let elapsed = (now - t).to_std().unwrap_or(Duration::ZERO);
                            grace
                                .checked_sub(elapsed)
                                .filter(|d| !d.is_zero())
                                .or(Some(Duration::ZERO))
                        }
                        None => None,
                    }
                };
                match due {
                    Some(d) if d.is_zero() => plan.updates.push(PodUpdate {
                        name,
                        id,
                        kind,
                        patch: update_patch(&pod.to_pod(), &expected, kind),
                        resize_patch: (kind == UpdateKind::Resize)
                            .then(|| resize_patch(&pod.to_pod(), &expected)),
                    }),
                    Some(d) => plan.requeue_after = min_duration(plan.requeue_after, d),
                    None => plan.requeue_after = min_duration(plan.requeue_after, grace),
                }
            }
            Sync::UpToDate => {}
        }
    }
    // Deleted pods (scale down, Killed) also get the gate False first, like the original.
    for d in &plan.deletes {
        if !d.force
            && let Some(id) = pods
                .iter()
                .find(|(_, p)| p.metadata().name.as_deref() == Some(d.name.as_str()))
                .map(|(id, _)| *id)
        {
            gate_false.insert(id);
        }
    }
    for (&id, pod) in &pods {
        if is_dying(pod) || !matches!(phase(pod), "Running" | "Pending") {
            continue;
        }
        let updating = phase(pod) == "Running" && is_updating(pod);
        let want = !(gate_false.contains(&id) || updating);
        let have = in_place_condition(pod);
        let ready_forced_off =
            !want && condition(pod, "Ready").is_some_and(|c| c.status != "False");
        if have != Some(want) || ready_forced_off {
            plan.conditions.push(ConditionWrite {
                name: pod.metadata().name.clone().unwrap_or_default(),
                ready: want,
                patch: condition_patch(pod, want, now),
            });
        }
    }

    // Claims: whenScaled Delete removes claims of ids >= replicas once their pod is gone;
    // whenDeleted decides whether claims carry the TApp's owner reference.
    let policy = spec.persistent_volume_claim_retention_policy.as_ref();
    let when_scaled_delete = policy.and_then(|p| p.when_scaled)
        == Some(PersistentVolumeClaimRetentionPolicyType::Delete);
    let explicit_owner = policy.and_then(|p| p.when_deleted);
    let uid = tapp.metadata.uid.clone().unwrap_or_default();
    for pvc in &observed.pvcs {
        let Some(name) = pvc.metadata.name.as_deref() else {
            continue;
        };
        let Some(id) = spec.volume_claim_templates.iter().find_map(|c| {
            let prefix = format!(
                "{}-{}-",
                c.metadata.name.as_deref().unwrap_or(""),
                tapp_name
            );
            name.strip_prefix(&prefix).and_then(parse_instance_id)
        }) else {
            continue;
        };
        let refs = pvc.metadata.owner_references.clone().unwrap_or_default();
        let owned = refs.iter().any(|r| r.uid == uid);
        let ours = owned
            || selector
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| pvc.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
        if !ours {
            continue;
        }
        if when_scaled_delete
            && id >= replicas
            && !pods.contains_key(&id)
            && pvc.metadata.deletion_timestamp.is_none()
        {
            plan.delete_pvcs.push(name.to_string());
            continue;
        }
        match explicit_owner {
            Some(PersistentVolumeClaimRetentionPolicyType::Retain) if owned => {
                plan.claim_ownership.push(ClaimOwnership {
                    name: name.into(),
                    owner_references: refs.into_iter().filter(|r| r.uid != uid).collect(),
                });
            }
            Some(PersistentVolumeClaimRetentionPolicyType::Delete) if !owned => {
                let mut refs = refs;
                refs.push(owner_reference(tapp));
                plan.claim_ownership.push(ClaimOwnership {
                    name: name.into(),
                    owner_references: refs,
                });
            }
            _ => {}
        }
    }

    if dying_force_wait {
        plan.requeue_after = min_duration(plan.requeue_after, NODE_RECHECK);
    }
    plan.status = Some(TAppStatus {
        observed_generation: tapp.metadata.generation,
        replicas: statuses
            .values()
            .filter(|s| **s != InstanceStatus::NotCreated)
            .count() as i32,
        ready_replicas: statuses
            .values()
            .filter(|s| **s == InstanceStatus::Running)
            .count() as i32,
        scale_label_selector: Some(selector_string(&selector)),
        app_status: Some(app_status(&statuses)),
        statuses,
    });
    plan
}

/// Converts a Kubernetes (jiff) timestamp to chrono.
pub fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Converts a chrono time to a Kubernetes (jiff) timestamp.
pub fn to_jiff(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or_default()
}

fn min_duration(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The JSON merge patch turning `old` status into `new` (ids that disappeared are nulled).
pub fn status_patch(old: Option<&TAppStatus>, new: &TAppStatus) -> Value {
    let mut status = serde_json::to_value(new).unwrap_or(Value::Null);
    if let (Some(old), Some(obj)) = (old, status.as_object_mut()) {
        let statuses = obj.entry("statuses").or_insert_with(|| json!({}));
        if let Some(map) = statuses.as_object_mut() {
            for k in old.statuses.keys() {
                if !new.statuses.contains_key(k) {
                    map.insert(k.clone(), Value::Null);
                }
            }
        }
        for (field, present) in [
            ("scaleLabelSelector", new.scale_label_selector.is_some()),
            ("appStatus", new.app_status.is_some()),
            ("observedGeneration", new.observed_generation.is_some()),
        ] {
            if !present {
                obj.insert(field.into(), Value::Null);
            }
        }
    }
    json!({ "status": status })
}

#[cfg(test)]
mod condition_patch_tests {
    use super::*;

    fn pod_with(conditions: Option<Vec<serde_json::Value>>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "uid": "u1", "resourceVersion": "42"},
            "status": {"conditions": conditions}
        }))
        .expect("pod")
    }

    #[test]
    fn the_condition_merges_by_type_and_is_bound_to_the_pod_uid() {
        for conditions in [
            None,
            Some(vec![json!({"type": "PodScheduled", "status": "True"})]),
            Some(vec![
                json!({"type": IN_PLACE_UPDATE_READY_CONDITION, "status": "False"}),
            ]),
        ] {
            let patch = condition_patch(&pod_with(conditions), true, Utc::now());
            assert_eq!(patch["metadata"], json!({"uid": "u1"}));
            let written = patch["status"]["conditions"].as_array().expect("list");
            assert_eq!(written.len(), 1, "{patch}");
            assert_eq!(written[0]["type"], IN_PLACE_UPDATE_READY_CONDITION);
            assert_eq!(written[0]["status"], "True");
        }
    }

    #[test]
    fn applied_twice_the_condition_is_still_there_once() {
        let pod = pod_with(Some(vec![json!({"type": "Ready", "status": "True"})]));
        let patch = condition_patch(&pod, true, Utc::now());
        let mut live = serde_json::to_value(&pod).expect("pod");
        for _ in 0..2 {
            // Conditions merge by type (what a strategic merge patch does with this list).
            let list = live["status"]["conditions"].as_array_mut().expect("list");
            for c in patch["status"]["conditions"].as_array().expect("list") {
                match list.iter_mut().find(|l| l["type"] == c["type"]) {
                    Some(l) => *l = c.clone(),
                    None => list.push(c.clone()),
                }
            }
        }
        let types: Vec<_> = live["status"]["conditions"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["type"].clone())
            .collect();
        assert_eq!(
            types,
            [json!("Ready"), json!(IN_PLACE_UPDATE_READY_CONDITION)]
        );
    }

    #[test]
    fn pod_ready_follows_the_gate_as_the_original_writes_it() {
        let not_ready = condition_patch(
            &pod_with(Some(vec![json!({"type": "Ready", "status": "True"})])),
            false,
            Utc::now(),
        );
        let ready = &not_ready["status"]["conditions"][1];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("False"))
        );
        assert_eq!(ready["reason"], READINESS_GATES_NOT_READY_REASON);
        let back = condition_patch(
            &pod_with(Some(vec![json!({"type": "Ready", "status": "False",
                "reason": READINESS_GATES_NOT_READY_REASON, "message": READINESS_GATES_NOT_READY_MESSAGE})])),
            true,
            Utc::now(),
        );
        let ready = &back["status"]["conditions"][1];
        assert_eq!(ready["status"], "True");
        assert!(
            ready["reason"].is_null() && ready.get("reason").is_some(),
            "reason removed"
        );
        // A pod the kubelet holds not Ready for another reason is left to the kubelet.
        let other = condition_patch(
            &pod_with(Some(vec![
                json!({"type": "Ready", "status": "False", "reason": "ContainersNotReady"}),
            ])),
            true,
            Utc::now(),
        );
        assert_eq!(
            other["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
