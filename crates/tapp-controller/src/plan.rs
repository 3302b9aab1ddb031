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
use addon_common::k8s_openapi;
use addon_common::k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodReadinessGate,
    PodTemplateSpec, Volume,
};
use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference,
};
use addon_common::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use chrono::{DateTime, Utc};
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
    /// The metadata of the claims in the TApp's namespace (any owner; matched by name): the
    /// planner reads names, labels, owner references and deletion only.
    pub pvcs: Vec<&'a ObjectMeta>,
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

/// Plans one reconcile of `tapp`, in phases that each can be read and tested alone:
/// [`index_pods`] → [`instance_actions`] → [`approve_within_budgets`] →
/// [`in_place_protocol`] → [`claim_actions`] → [`tapp_status`].
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
    let pods = index_pods(
        tapp.metadata.name.as_deref().unwrap_or_default(),
        &observed.pods,
    );
    let statuses = instance_statuses(tapp, &pods);
    let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some(default_selector_labels(&spec.template)),
        match_expressions: None,
    });
    let (running, completed) = desired_instances(tapp, flags);
    plan.desired_running = running.len() as u32;

    let instances = Instances {
        tapp,
        observed,
        flags,
        pods: &pods,
        running: &running,
        completed: &completed,
        selector: &selector,
    };
    let actions = instance_actions(&instances, &mut plan);
    let approved = approve_within_budgets(spec, &pods, &running, actions.pending);
    in_place_protocol(spec, &pods, approved, now, &mut plan);
    claim_actions(tapp, &observed.pvcs, &pods, &selector, &mut plan);
    if actions.waiting_for_node {
        plan.requeue_after = min_duration(plan.requeue_after, NODE_RECHECK);
    }
    plan.status = Some(tapp_status(tapp, statuses, &selector));
    plan
}

/// Phase 1: the observed pods by instance id; only the pod named `<tapp>-<id>` counts for an
/// id.
pub fn index_pods<'p, P: PodView>(tapp_name: &str, pods: &[&'p P]) -> BTreeMap<u32, &'p P> {
    let mut by_id = BTreeMap::new();
    for &pod in pods {
        if let Some(id) = instance_id(pod)
            && pod.metadata().name.as_deref() == Some(pod_name(tapp_name, &id.to_string()).as_str())
        {
            by_id.insert(id, pod);
        }
    }
    by_id
}

/// What [`instance_actions`] works from: the TApp, what was observed, its pods by id and its
/// desired instances.
pub struct Instances<'a, P> {
    /// The TApp (defaulted).
    pub tapp: &'a TApp,
    /// What was observed.
    pub observed: &'a Observed<'a, P>,
    /// Process flags.
    pub flags: &'a Flags,
    /// Its pods by id ([`index_pods`]).
    pub pods: &'a BTreeMap<u32, &'a P>,
    /// Ids that should run.
    pub running: &'a BTreeSet<u32>,
    /// Ids that are done (killed, or finished batch instances kept).
    pub completed: &'a BTreeSet<u32>,
    /// The TApp's selector (or the default one).
    pub selector: &'a LabelSelector,
}

/// An update or recreate that needs the budget: instance id, what it needs, the expected pod.
pub type Pending = (u32, Sync, Pod);

/// What [`instance_actions`] leaves to the later phases.
#[derive(Debug, Default)]
pub struct Actions {
    /// Updates and recreates that wait for [`approve_within_budgets`], in ascending ids.
    pub pending: Vec<Pending>,
    /// A dying pod waits for a force delete until its node is known lost.
    pub waiting_for_node: bool,
}

/// Template hashes and selector checks, computed once per template name (the template itself
/// is borrowed from the spec: nothing is cloned per instance).
struct Templates<'a> {
    tapp: &'a TApp,
    selector: &'a LabelSelector,
    memo: Option<&'a HashMemo>,
    resolved: BTreeMap<&'a str, Option<Arc<TemplateHashes>>>,
}

impl<'a> Templates<'a> {
    /// The template of instance `id` and its hashes; `None` (with a warning, once per
    /// template) when the template is missing or its labels do not match the selector.
    fn resolve(
        &mut self,
        id: u32,
        warnings: &mut Vec<(String, String)>,
    ) -> Option<(&'a PodTemplateSpec, Arc<TemplateHashes>)> {
        let (tapp, selector, memo) = (self.tapp, self.selector, self.memo);
        let key = id.to_string();
        let name = tapp.spec.template_name_for(&key);
        let template = tapp.spec.template_for(&key);
        let entry = self.resolved.entry(name).or_insert_with(|| {
            let template = match &template {
                Ok(t) => *t,
                Err(e) => {
                    warnings.push(("TemplateNotFound".into(), e.to_string()));
                    return None;
                }
            };
            let empty = BTreeMap::new();
            let labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .unwrap_or(&empty);
            if !selector_matches(selector, labels) {
                warnings.push((
                    "SelectorMismatch".into(),
                    format!("template {name:?} labels do not match spec.selector ({}); its instances are not created", selector_string(selector)),
                ));
                return None;
            }
            Some(match (memo, tapp.metadata.uid.as_deref()) {
                (Some(memo), Some(uid)) => memo.hashes(uid, tapp.metadata.generation, name, template),
                _ => Arc::new(TemplateHashes::of(template)),
            })
        });
        match (template, entry) {
            (Ok(t), Some(h)) => Some((t, h.clone())),
            _ => None,
        }
    }
}

fn pod_delete(pod: &impl PodView, force: bool, reason: DeleteReason) -> PodDelete {
    PodDelete {
        name: pod.metadata().name.clone().unwrap_or_default(),
        uid: pod.metadata().uid.clone().unwrap_or_default(),
        force,
        reason,
    }
}

/// Phase 2 (A.6): what each instance needs. Missing pods are created (with their claims),
/// pods of ids no longer running deleted, dying pods on lost nodes force-deleted, finished
/// pods that migrate deleted, metadata-only changes patched; updates and recreates are
/// returned for the budgets.
pub fn instance_actions<P: PodView>(inst: &Instances<'_, P>, plan: &mut Plan) -> Actions {
    let (tapp, spec) = (inst.tapp, &inst.tapp.spec);
    let mut templates = Templates {
        tapp,
        selector: inst.selector,
        memo: inst.observed.hash_memo,
        resolved: BTreeMap::new(),
    };
    let mut actions = Actions::default();
    let pvc_names: BTreeSet<&str> = inst
        .observed
        .pvcs
        .iter()
        .filter_map(|p| p.name.as_deref())
        .collect();
    // A dying pod: force-deleted when its node is lost (and the TApp asks for it).
    let mut dying = |plan: &mut Plan, pod: &P| {
        if spec.force_delete_pod {
            if node_lost(pod, inst.observed) {
                plan.deletes
                    .push(pod_delete(pod, true, DeleteReason::Delete));
            } else {
                actions.waiting_for_node = true;
            }
        }
    };
    let mut pending = Vec::new();
    for &id in inst.running {
        match inst.pods.get(&id) {
            None => {
                let Some((template, h)) = templates.resolve(id, &mut plan.warnings) else {
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
            Some(pod) if is_dying(pod) => dying(plan, pod),
            Some(pod) if matches!(phase(pod), "Succeeded" | "Failed") => {
                if should_migrate(spec, pod, &id.to_string()) {
                    plan.deletes
                        .push(pod_delete(*pod, false, DeleteReason::Delete));
                }
            }
            Some(pod) => {
                let Some((template, h)) = templates.resolve(id, &mut plan.warnings) else {
                    continue;
                };
                if let Some(p) = sync_instance(tapp, id, *pod, template, &h, inst.flags, plan) {
                    pending.push(p);
                }
            }
        }
    }
    let replicas = spec.replicas.max(0) as u32;
    let gone = inst.completed.iter().filter_map(|id| inst.pods.get(id));
    for pod in gone.chain(inst.pods.range(replicas..).map(|(_, p)| p)) {
        if is_dying(*pod) {
            dying(plan, pod);
        } else {
            plan.deletes
                .push(pod_delete(*pod, false, DeleteReason::Delete));
        }
    }
    actions.pending = pending;
    actions
}

/// A live, running instance against its template: counted as updated, patched in place when
/// only its metadata differs (no readiness protocol, no budget), or returned as pending.
fn sync_instance<P: PodView>(
    tapp: &TApp,
    id: u32,
    pod: &P,
    template: &PodTemplateSpec,
    hashes: &TemplateHashes,
    flags: &Flags,
    plan: &mut Plan,
) -> Option<Pending> {
    // The common case, checked before building the expected pod: our own pod of the current
    // template.
    if has_own_hashes(pod) && pod.label(TEMPLATE_HASH_LABEL) == Some(hashes.template.as_str()) {
        plan.updated_instances += 1;
        return None;
    }
    let expected = build_pod(tapp, id, template, hashes);
    match sync_needed(pod, &expected, hashes, flags.resize_supported) {
        Sync::UpToDate => plan.updated_instances += 1,
        Sync::Update(UpdateKind::Metadata) => {
            plan.updated_instances += 1;
            plan.updates.push(PodUpdate {
                name: pod.metadata().name.clone().unwrap_or_default(),
                id,
                kind: UpdateKind::Metadata,
                patch: update_patch(&pod.to_pod(), &expected, UpdateKind::Metadata),
                resize_patch: None,
            });
        }
        sync => return Some((id, sync, expected)),
    }
    None
}

/// Phase 3 (A.6 transformPodActions): the pending updates the budgets allow. The force group
/// (instances not on the rolling template) goes first, then the rolling group in ascending id
/// order; both consume the same set of available pods.
pub fn approve_within_budgets<P: PodView>(
    spec: &TAppSpec,
    pods: &BTreeMap<u32, &P>,
    running: &BTreeSet<u32>,
    pending: Vec<Pending>,
) -> Vec<Pending> {
    let mut available: BTreeSet<u32> = running
        .iter()
        .copied()
        .filter(|id| pods.get(id).is_some_and(|p| is_available(*p)))
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
    let rolling_template = spec.rolling_template_name();
    let (rolling, force): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|(id, _, _)| spec.template_name_for(&id.to_string()) == rolling_template);
    let mut approved = Vec::new();
    for (id, sync, expected) in force {
        // A pod already in the in-place protocol (gate False) was counted when it started.
        let in_protocol = pods
            .get(&id)
            .is_some_and(|pod| in_place_condition(*pod) == Some(false) && !is_updating(*pod));
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
    approved
}

/// Phase 4 (A.7): the in-place protocol. Approved recreates are deleted; approved updates are
/// patched once the gate has been False for the grace period (else the plan looks again
/// then); the gate condition of every live pod is written where it differs from what it
/// should be (False for pods being updated, recreated or deleted, True otherwise).
pub fn in_place_protocol<P: PodView>(
    spec: &TAppSpec,
    pods: &BTreeMap<u32, &P>,
    approved: Vec<Pending>,
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    let grace = Duration::from_secs(
        spec.update_strategy
            .in_place_update_grace_period_seconds
            .unwrap_or(0)
            .max(0) as u64,
    );
    let mut gate_false: BTreeSet<u32> = BTreeSet::new();
    for (id, sync, expected) in approved {
        let Some(&pod) = pods.get(&id) else { continue };
        match sync {
            Sync::Recreate => {
                gate_false.insert(id);
                plan.deletes
                    .push(pod_delete(pod, false, DeleteReason::Recreate));
            }
            Sync::Update(kind) => {
                gate_false.insert(id);
                match update_due(pod, grace, now) {
                    Some(d) if d.is_zero() => plan.updates.push(PodUpdate {
                        name: pod.metadata().name.clone().unwrap_or_default(),
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
    for d in plan.deletes.iter().filter(|d| !d.force) {
        if let Some((&id, _)) = pods
            .iter()
            .find(|(_, p)| p.metadata().name.as_deref() == Some(d.name.as_str()))
        {
            gate_false.insert(id);
        }
    }
    plan.conditions = gate_conditions(pods, &gate_false, now);
}

/// How long until an in-place update of `pod` may be patched: zero when due, `None` when its
/// gate is not False yet (the grace period starts when it is).
fn update_due(pod: &impl PodView, grace: Duration, now: DateTime<Utc>) -> Option<Duration> {
    if grace.is_zero() {
        return Some(Duration::ZERO);
    }
    let since = condition(pod, IN_PLACE_UPDATE_READY_CONDITION)
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| to_chrono(t.0))?;
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    Some(
        grace
            .checked_sub(elapsed)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::ZERO),
    )
}

/// The gate condition writes: for each live (Running or Pending, not dying) pod whose gate
/// is not what it should be, or whose PodReady is not False while its gate must be.
fn gate_conditions<P: PodView>(
    pods: &BTreeMap<u32, &P>,
    gate_false: &BTreeSet<u32>,
    now: DateTime<Utc>,
) -> Vec<ConditionWrite> {
    let mut writes = Vec::new();
    for (&id, &pod) in pods {
        if is_dying(pod) || !matches!(phase(pod), "Running" | "Pending") {
            continue;
        }
        let updating = phase(pod) == "Running" && is_updating(pod);
        let want = !(gate_false.contains(&id) || updating);
        let have = in_place_condition(pod);
        let ready_forced_off =
            !want && condition(pod, "Ready").is_some_and(|c| c.status != "False");
        if have != Some(want) || ready_forced_off {
            writes.push(ConditionWrite {
                name: pod.metadata().name.clone().unwrap_or_default(),
                ready: want,
                patch: condition_patch(pod, want, now),
            });
        }
    }
    writes
}

/// Phase 5: claims. `whenScaled: Delete` removes the claims of ids >= replicas once their pod
/// is gone; `whenDeleted` decides whether claims carry the TApp's owner reference.
pub fn claim_actions<P>(
    tapp: &TApp,
    pvcs: &[&ObjectMeta],
    pods: &BTreeMap<u32, &P>,
    selector: &LabelSelector,
    plan: &mut Plan,
) {
    let spec = &tapp.spec;
    let tapp_name = tapp.metadata.name.as_deref().unwrap_or_default();
    let replicas = spec.replicas.max(0) as u32;
    let policy = spec.persistent_volume_claim_retention_policy.as_ref();
    let when_scaled_delete = policy.and_then(|p| p.when_scaled)
        == Some(PersistentVolumeClaimRetentionPolicyType::Delete);
    let explicit_owner = policy.and_then(|p| p.when_deleted);
    let uid = tapp.metadata.uid.clone().unwrap_or_default();
    for pvc in pvcs {
        let Some(name) = pvc.name.as_deref() else {
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
        let refs = pvc.owner_references.clone().unwrap_or_default();
        let owned = refs.iter().any(|r| r.uid == uid);
        let ours = owned
            || selector
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| pvc.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
        if !ours {
            continue;
        }
        if when_scaled_delete
            && id >= replicas
            && !pods.contains_key(&id)
            && pvc.deletion_timestamp.is_none()
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
}

/// Phase 6: the status from the instance statuses.
pub fn tapp_status(
    tapp: &TApp,
    statuses: BTreeMap<String, InstanceStatus>,
    selector: &LabelSelector,
) -> TAppStatus {
    let count = |f: fn(&InstanceStatus) -> bool| statuses.values().filter(|s| f(s)).count() as i32;
    TAppStatus {
        observed_generation: tapp.metadata.generation,
        replicas: count(|s| *s != InstanceStatus::NotCreated),
        ready_replicas: count(|s| *s == InstanceStatus::Running),
        scale_label_selector: Some(selector_string(selector)),
        app_status: Some(app_status(&statuses)),
        statuses,
    }
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
