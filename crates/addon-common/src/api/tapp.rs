//! `apps.tkestack.io/v1` TApp: a workload of numbered instances with per-instance templates,
//! per-instance desired states and in-place image updates. Wire-compatible with
//! `tkestack.io/tapp` (`pkg/apis/tappcontroller/v1/types.go`).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{embedded, embedded_atomic_list, is_false};

/// API group of TApp.
pub const GROUP: &str = "apps.tkestack.io";
/// API version of TApp.
pub const VERSION: &str = "v1";
/// `apiVersion` of TApp objects (and of the owner references on their pods and PVCs).
pub const API_VERSION: &str = "apps.tkestack.io/v1";
/// Kind of TApp objects.
pub const KIND: &str = "TApp";

/// Name of the template that `spec.template` stands for (the Go constant `DefaultTemplateName`).
/// A `templates` entry or `defaultTemplateName` equal to this resolves to `spec.template`.
pub const DEFAULT_TEMPLATE_NAME: &str = "default";
/// Default of `spec.updateStrategy.template` (Go `DefaultRollingUpdateTemplateName`).
pub const DEFAULT_ROLLING_UPDATE_TEMPLATE_NAME: &str = "default";
/// Default of `spec.updateStrategy.maxUnavailable` (Go `DefaultMaxUnavailable`).
pub const DEFAULT_MAX_UNAVAILABLE: i32 = 1;
/// Default of `spec.updateStrategy.forceUpdate.maxUnavailable`.
pub const DEFAULT_FORCE_UPDATE_MAX_UNAVAILABLE: &str = "100%";

/// Pod label holding the instance id (`"0"`, `"1"`, ...).
pub const INSTANCE_ID_LABEL: &str = "tapp_instance_key";
/// Pod label holding the hash of the pod template the pod was created from.
pub const TEMPLATE_HASH_LABEL: &str = "tapp_template_hash_key";
/// Pod label holding the hash of the template spec with every container image blanked: equal
/// values mean the pod can be updated in place (only images differ).
pub const UNIQ_HASH_LABEL: &str = "tapp_uniq_hash_key";
/// Pod condition type and readiness gate used by the in-place update protocol.
pub const IN_PLACE_UPDATE_READY_CONDITION: &str = "tkestack.io/InPlaceUpdate";
/// Pod annotation set to `"true"` once a pod has been updated in place.
pub const IN_PLACE_UPDATE_STATE_ANNOTATION: &str = "tkestack.io/inplace-update-state";
/// Pod annotation (Galaxy port mapping) preserved from the live pod across in-place updates.
pub const PORT_MAPPING_ANNOTATION: &str = "tkestack.io/portmapping";
/// PodReady reason written while the in-place readiness gate is False.
pub const READINESS_GATES_NOT_READY_REASON: &str = "ReadinessGatesNotReady";

/// Desired state of a TApp: a set of numbered instances (pods `<tapp>-<id>` for ids
/// `0..replicas-1`), each created from the default template, a pool template pinned per
/// instance, and optionally stopped (`statuses`).
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.tkestack.io",
    version = "v1",
    kind = "TApp",
    plural = "tapps",
    singular = "tapp",
    namespaced,
    status = "TAppStatus",
    derive = "PartialEq",
    category = "all",
    doc = "TApp (tkestack.io) runs numbered pod instances with stable ids, per-instance templates, per-instance desired states and in-place image updates.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.scaleLabelSelector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Instances whose pod is Running and Ready"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.appStatus",
        description = "Aggregated state of the TApp"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TAppSpec {
    /// Desired number of instances. Instance ids are exactly 0..replicas-1; scaling down removes
    /// the highest ids first. Changed by `kubectl scale`, HPA and CronHPA through the scale
    /// subresource. Always serialized, so 0 is kept. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Label query over the pods of this TApp; pods must also be controlled by it (owner
    /// reference). Defaulted by the controller to the labels of `template` minus the
    /// `tapp_template_hash_key` and `tapp_uniq_hash_key` hash labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "embedded::<LabelSelector>")]
    pub selector: Option<LabelSelector>,

    /// The default pod template, known as the template named "default". Used for every instance
    /// that is not pinned to another template in `templates` (unless `defaultTemplateName`
    /// names a pool template). Its labels must match `selector`.
    #[schemars(schema_with = "embedded::<PodTemplateSpec>")]
    pub template: PodTemplateSpec,

    /// Named alternative pod templates (template name -> pod template), referenced from
    /// `templates`, `defaultTemplateName` and `updateStrategy.template`. Every template must
    /// carry the selector's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "embedded::<BTreeMap<String, PodTemplateSpec>>")]
    pub template_pool: BTreeMap<String, PodTemplateSpec>,

    /// Desired state per instance (instance id as a decimal string -> state). Only "Killed" has
    /// an effect: the instance's pod is deleted and its id stays reserved (still counted in
    /// status.replicas). Remove the entry or set "Running" to start the instance again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, InstanceStatus>,

    /// Template pin per instance (instance id as a decimal string -> template name). Instances
    /// without an entry use `defaultTemplateName`. The name "default" means `template`; any
    /// other name must exist in `templatePool`. Changing an instance's template updates its pod
    /// in place when only container images differ, otherwise the pod is recreated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, String>,

    /// How pods are updated when their template changes: the rolling template and its
    /// unavailability budget, and the budget of every other ("force") update.
    #[serde(default)]
    pub update_strategy: TAppUpdateStrategy,

    /// Force-delete (grace period 0) pods that are terminating on a node that is NotReady,
    /// Unknown or gone, so their instance can be recreated elsewhere. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_delete_pod: bool,

    /// Delete `templatePool` entries that no instance, `updateStrategy.template` nor
    /// `defaultTemplateName` refers to. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_delete_unused_template: bool,

    /// Never recreate the pod of an instance whose pod has completed (Succeeded or Failed);
    /// when false the decision follows the template's restartPolicy. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub never_migrate: bool,

    /// Persistent volume claims created per instance, like StatefulSet's: claim
    /// `<claim name>-<tapp>-<id>` is created before the pod and mounted as the pod volume named
    /// after the claim template (replacing a template volume of that name). Claims are reused
    /// when an instance comes back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "embedded_atomic_list::<PersistentVolumeClaim>")]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,

    /// Name of a headless Service governing the pods: each pod gets hostname `<pod name>` and
    /// subdomain `<serviceName>`, i.e. a stable DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,

    /// Template of the instances that have no entry in `templates`: "default" (the default)
    /// means `template`, any other name refers to `templatePool`. Always serialized.
    #[serde(default = "default_template_name")]
    pub default_template_name: String,

    /// What happens to the per-instance claims of `volumeClaimTemplates` when instances are
    /// scaled away or the TApp is deleted. Extension of this implementation (not in the
    /// original). When absent, the original's behaviour: claims are kept on scale-down and
    /// deleted with the TApp (they carry its owner reference). When present, each unset
    /// field means Retain, as for StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<TAppPersistentVolumeClaimRetentionPolicy>,
}

fn default_template_name() -> String {
    DEFAULT_TEMPLATE_NAME.to_string()
}

/// Update strategy of a TApp. Instances whose template is `template` form the rolling group
/// (updated in ascending id order within `maxUnavailable`); all other template changes are
/// forced within `forceUpdate.maxUnavailable`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TAppUpdateStrategy {
    /// Name of the rolling-update template ("default" means `spec.template`). Defaulted by the
    /// controller to `defaultTemplateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,

    /// Maximum number of unavailable instances while updating the rolling group: an integer of
    /// at least 1 or a percentage of the desired running instances ("1%".."100%", rounded
    /// up). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,

    /// Budget of updates of instances outside the rolling group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_update: Option<ForceUpdateStrategy>,

    /// Seconds an instance is kept not-ready (readiness gate tkestack.io/InPlaceUpdate False)
    /// before its containers are updated in place, so load balancers can drain it. Extension of
    /// this implementation (like OpenKruise's gracePeriodSeconds); default 0 (no wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub in_place_update_grace_period_seconds: Option<i32>,
}

/// Budget of updates of instances that are not in the rolling group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForceUpdateStrategy {
    /// Maximum number of unavailable instances caused by forced updates: an integer of at least
    /// 1 or a percentage of the desired running instances (rounded up). Default "100%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Retention of the per-instance claims created from `volumeClaimTemplates` (same semantics as
/// StatefulSet's persistentVolumeClaimRetentionPolicy).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TAppPersistentVolumeClaimRetentionPolicy {
    /// What happens to the claims of instances removed by scaling down: Retain (default) keeps
    /// them for when the instance comes back, Delete deletes them once the pod is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_scaled: Option<PersistentVolumeClaimRetentionPolicyType>,

    /// What happens to the claims when the TApp is deleted: Retain (default) orphans them,
    /// Delete lets them be garbage-collected with the TApp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_deleted: Option<PersistentVolumeClaimRetentionPolicyType>,
}

/// Retain or delete per-instance claims.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum PersistentVolumeClaimRetentionPolicyType {
    /// Keep the claims.
    #[default]
    Retain,
    /// Delete the claims.
    Delete,
}

/// State of one TApp instance. In `spec.statuses` only `Killed` (stop the instance) and
/// `Running` (no effect) are meaningful; `status.statuses` reports the observed state.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[schemars(description = "")]
pub enum InstanceStatus {
    /// The instance has no pod yet.
    NotCreated,
    /// The pod is Pending, or Running but not Ready.
    Pending,
    /// The pod is Running and Ready (or has no Ready condition).
    Running,
    /// Declared by the original but never reported.
    Updating,
    /// The pod failed and will be recreated (migrated).
    PodFailed,
    /// The pod succeeded and will be recreated (migrated).
    PodSucc,
    /// The pod is being deleted.
    Killing,
    /// The instance was stopped through `spec.statuses`.
    Killed,
    /// The instance failed for good.
    Failed,
    /// The instance completed successfully for good.
    Succ,
    /// The pod's phase is Unknown.
    Unknown,
}

impl InstanceStatus {
    /// Every value, in the order of the Go constants.
    pub const ALL: [InstanceStatus; 11] = [
        InstanceStatus::NotCreated,
        InstanceStatus::Pending,
        InstanceStatus::Running,
        InstanceStatus::Updating,
        InstanceStatus::PodFailed,
        InstanceStatus::PodSucc,
        InstanceStatus::Killing,
        InstanceStatus::Killed,
        InstanceStatus::Failed,
        InstanceStatus::Succ,
        InstanceStatus::Unknown,
    ];

    /// The wire string of this value.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::NotCreated => "NotCreated",
            InstanceStatus::Pending => "Pending",
            InstanceStatus::Running => "Running",
            InstanceStatus::Updating => "Updating",
            InstanceStatus::PodFailed => "PodFailed",
            InstanceStatus::PodSucc => "PodSucc",
            InstanceStatus::Killing => "Killing",
            InstanceStatus::Killed => "Killed",
            InstanceStatus::Failed => "Failed",
            InstanceStatus::Succ => "Succ",
            InstanceStatus::Unknown => "Unknown",
        }
    }

    /// Killed, Failed or Succ: the instance has reached a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InstanceStatus::Killed | InstanceStatus::Failed | InstanceStatus::Succ
        )
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Aggregated state of a TApp.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum AppStatus {
    /// No instance exists yet (also when replicas is 0).
    Pending,
    /// At least one instance is not in a final state.
    Running,
    /// Every instance is final and at least one Failed.
    Failed,
    /// Every instance is final, none Failed, at least one Succ.
    Succ,
    /// Every instance was Killed.
    Killed,
}

impl AppStatus {
    /// The wire string of this value.
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Pending => "Pending",
            AppStatus::Running => "Running",
            AppStatus::Failed => "Failed",
            AppStatus::Succ => "Succ",
            AppStatus::Killed => "Killed",
        }
    }

    /// Failed, Succ or Killed: the whole app has finished.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            AppStatus::Failed | AppStatus::Succ | AppStatus::Killed
        )
    }
}

impl fmt::Display for AppStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a TApp, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TAppStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Number of instances that exist or are final: entries of `statuses` other than
    /// NotCreated, so Killed, Succ and Failed instances count. Reported by the scale
    /// subresource. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Number of instances whose pod is Running and Ready. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub ready_replicas: i32,

    /// `spec.selector` in label-selector string form (e.g. `app=example-tapp`), used by the
    /// scale subresource for HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_label_selector: Option<String>,

    /// Aggregated state: Pending (no instance), Running (some instance not final), else Failed
    /// (some Failed), Succ (some Succ) or Killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_status: Option<AppStatus>,

    /// Observed state per instance (instance id as a decimal string -> state), for every id
    /// below replicas and every id that still has a pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, InstanceStatus>,
}

/// Error of [`TAppSpec::template_for`]: the instance's template name is neither "default" nor
/// a key of `templatePool`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name:?} of instance {id} not found in templatePool")]
pub struct TemplateNotFound {
    /// Instance id.
    pub id: String,
    /// The template name that could not be resolved.
    pub name: String,
}

impl TAppSpec {
    /// Name of the template of instance `id`: `templates[id]`, else `defaultTemplateName`
    /// (an empty `defaultTemplateName` counts as "default").
    pub fn template_name_for(&self, id: &str) -> &str {
        match self.templates.get(id) {
            Some(name) => name,
            None if self.default_template_name.is_empty() => DEFAULT_TEMPLATE_NAME,
            None => &self.default_template_name,
        }
    }

    /// Resolves a template name: "default" (the constant, not `defaultTemplateName`) is
    /// `template`, anything else is looked up in `templatePool`.
    pub fn template_by_name(&self, name: &str) -> Option<&PodTemplateSpec> {
        if name == DEFAULT_TEMPLATE_NAME {
            Some(&self.template)
        } else {
            self.template_pool.get(name)
        }
    }

    /// The pod template of instance `id` (reference A.2, Go `getPodTemplate`).
    pub fn template_for(&self, id: &str) -> Result<&PodTemplateSpec, TemplateNotFound> {
        let name = self.template_name_for(id);
        self.template_by_name(name).ok_or_else(|| TemplateNotFound {
            id: id.to_string(),
            name: name.to_string(),
        })
    }

    /// The rolling-update template name (`updateStrategy.template`, defaulting to
    /// `defaultTemplateName`).
    pub fn rolling_template_name(&self) -> &str {
        match self.update_strategy.template.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ if self.default_template_name.is_empty() => DEFAULT_TEMPLATE_NAME,
            _ => &self.default_template_name,
        }
    }

    /// Whether `spec.statuses` asks for instance `id` to be stopped.
    pub fn is_killed(&self, id: &str) -> bool {
        self.statuses.get(id) == Some(&InstanceStatus::Killed)
    }
}

impl Default for TAppSpec {
    fn default() -> Self {
        TAppSpec {
            replicas: 0,
            selector: None,
            template: PodTemplateSpec::default(),
            template_pool: BTreeMap::new(),
            statuses: BTreeMap::new(),
            templates: BTreeMap::new(),
            update_strategy: TAppUpdateStrategy::default(),
            force_delete_pod: false,
            auto_delete_unused_template: false,
            never_migrate: false,
            volume_claim_templates: Vec::new(),
            service_name: None,
            default_template_name: default_template_name(),
            persistent_volume_claim_retention_policy: None,
        }
    }
}

/// Name of the pod of instance `id` of TApp `tapp`: `<tapp>-<id>`.
pub fn pod_name(tapp: &str, id: &str) -> String {
    format!("{tapp}-{id}")
}

/// Name of the claim created from claim template `claim` for instance `id` of TApp `tapp`:
/// `<claim>-<tapp>-<id>`.
pub fn claim_name(claim: &str, tapp: &str, id: &str) -> String {
    format!("{claim}-{tapp}-{id}")
}

/// Parses an instance id key of `templates`/`statuses` (a non-negative decimal integer
/// without leading zeros, as the pod label `tapp_instance_key` writes it).
pub fn parse_instance_id(key: &str) -> Option<u32> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "007" would never match the pod label "7": only canonical decimal ids are ids.
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{
        assert_described, assert_structural, crd_json, load_fixture, roundtrip_exact, schema_at,
    };
    use kube::core::CustomResourceExt;
    use serde_json::json;

    const EMBEDDED: &[&str] = &[
        "spec.selector",
        "spec.template",
        "spec.templatePool",
        "spec.volumeClaimTemplates",
    ];

    #[test]
    fn seed_examples_deserialize_and_roundtrip() {
        for file in [
            "tapp-create.yaml",
            "tapp-pin-instance.yaml",
            "tapp-rolling-update.yaml",
            "tapp-kill-instance.yaml",
        ] {
            let (tapp, original): (TApp, _) = load_fixture(file);
            assert_eq!(
                tapp.metadata.name.as_deref(),
                Some("example-tapp"),
                "{file}"
            );
            assert_eq!(tapp.spec.replicas, 3, "{file}");
            assert_eq!(tapp.spec.default_template_name, DEFAULT_TEMPLATE_NAME);
            roundtrip_exact(
                &tapp,
                &original,
                &[
                    "/spec/defaultTemplateName",
                    "/spec/updateStrategy",
                    "/apiVersion",
                ],
            );
        }
        let (killed, _): (TApp, _) = load_fixture("tapp-kill-instance.yaml");
        assert!(killed.spec.is_killed("1"));
        assert!(!killed.spec.is_killed("0"));
        assert_eq!(
            killed.spec.update_strategy.max_unavailable,
            Some(IntOrString::Int(1))
        );
        assert_eq!(killed.spec.rolling_template_name(), "test");
        let image =
            |t: &PodTemplateSpec| t.spec.as_ref().and_then(|s| s.containers[0].image.clone());
        assert_eq!(
            image(killed.spec.template_for("1").expect("pinned")).as_deref(),
            Some("nginx:latest")
        );
    }

    #[test]
    fn template_resolution_follows_the_original() {
        let mut spec = TAppSpec::default();
        spec.template_pool
            .insert("foo".into(), PodTemplateSpec::default());
        spec.templates.insert("1".into(), "foo".into());
        spec.templates.insert("2".into(), "missing".into());
        assert_eq!(spec.template_name_for("0"), "default");
        assert!(std::ptr::eq(
            spec.template_for("0").expect("0"),
            &spec.template
        ));
        assert!(std::ptr::eq(
            spec.template_for("1").expect("1"),
            &spec.template_pool["foo"]
        ));
        assert_eq!(
            spec.template_for("2"),
            Err(TemplateNotFound {
                id: "2".into(),
                name: "missing".into()
            })
        );
        // defaultTemplateName names a pool template for un-pinned ids.
        spec.default_template_name = "foo".into();
        assert!(std::ptr::eq(
            spec.template_for("0").expect("0"),
            &spec.template_pool["foo"]
        ));
        assert_eq!(spec.rolling_template_name(), "foo");
        // A pool entry called "default" is never used: the constant means spec.template.
        spec.template_pool
            .insert("default".into(), PodTemplateSpec::default());
        spec.templates.insert("3".into(), "default".into());
        assert!(std::ptr::eq(
            spec.template_for("3").expect("3"),
            &spec.template
        ));
    }

    #[test]
    fn wire_shape_of_defaults_and_zero() {
        let tapp = TApp::new("t", TAppSpec::default());
        let value = serde_json::to_value(&tapp).expect("json");
        assert_eq!(value["apiVersion"], "apps.tkestack.io/v1");
        assert_eq!(value["kind"], "TApp");
        assert_eq!(value["spec"]["replicas"], 0);
        assert_eq!(value["spec"]["defaultTemplateName"], "default");
        assert_eq!(value["spec"]["updateStrategy"], json!({}));
        assert!(value["spec"].get("forceDeletePod").is_none());
        assert!(value["spec"].get("templatePool").is_none());
        let status = serde_json::to_value(TAppStatus::default()).expect("json");
        assert_eq!(status, json!({"replicas": 0, "readyReplicas": 0}));
    }

    #[test]
    fn unknown_fields_are_accepted_and_statuses_parse() {
        let tapp: TApp = serde_json::from_value(json!({
            "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
            "metadata": {"name": "x"},
            "spec": {"replicas": 2, "template": {}, "someFutureField": true,
                     "updateStrategy": {"maxUnavailable": "50%", "forceUpdate": {"maxUnavailable": "100%"},
                                        "inPlaceUpdateGracePeriodSeconds": 10}},
            "status": {"replicas": 2, "readyReplicas": 1, "appStatus": "Running",
                       "statuses": {"0": "Running", "1": "PodFailed"}, "unknown": 1}
        }))
        .expect("tapp");
        let status = tapp.status.expect("status");
        assert_eq!(status.app_status, Some(AppStatus::Running));
        assert_eq!(status.statuses["1"], InstanceStatus::PodFailed);
        assert_eq!(
            tapp.spec
                .update_strategy
                .in_place_update_grace_period_seconds,
            Some(10)
        );
        for s in InstanceStatus::ALL {
            let v = serde_json::to_value(s).expect("json");
            assert_eq!(v, json!(s.as_str()));
        }
    }

    #[test]
    fn instance_ids() {
        assert_eq!(parse_instance_id("0"), Some(0));
        assert_eq!(parse_instance_id("12"), Some(12));
        for bad in ["", "-1", "a", "1a", " 1", "007", "00"] {
            assert_eq!(parse_instance_id(bad), None);
        }
        assert_eq!(pod_name("web", "3"), "web-3");
        assert_eq!(claim_name("data", "web", "3"), "data-web-3");
    }

    #[test]
    fn crd_golden() {
        let crd = TApp::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("tapps.apps.tkestack.io"));
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let names = &crd.spec.names;
        assert_eq!(names.kind, "TApp");
        assert_eq!(names.plural, "tapps");
        assert_eq!(names.singular.as_deref(), Some("tapp"));
        assert_eq!(names.categories.as_deref(), Some(&["all".to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        let scale = version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .expect("scale");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.scaleLabelSelector")
        );
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Replicas", ".spec.replicas"),
                ("Ready", ".status.readyReplicas"),
                ("Status", ".status.appStatus"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );

        let json = crd_json(&crd);
        assert_structural(&json);
        assert_described(&json, EMBEDDED);
        assert_eq!(
            schema_at(&json, "spec.replicas")["minimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(schema_at(&json, "spec.replicas")["type"], "integer");
        assert_eq!(
            schema_at(&json, "spec.defaultTemplateName")["default"],
            "default"
        );
        assert_eq!(
            schema_at(&json, "spec.updateStrategy.maxUnavailable")["x-kubernetes-int-or-string"],
            true
        );
        assert_eq!(
            schema_at(&json, "spec.updateStrategy.forceUpdate.maxUnavailable")["x-kubernetes-int-or-string"],
            true
        );
        assert_eq!(
            schema_at(&json, "spec.updateStrategy.inPlaceUpdateGracePeriodSeconds")["minimum"]
                .as_f64(),
            Some(0.0)
        );
        let statuses: Vec<String> = serde_json::from_value(
            schema_at(&json, "spec.statuses")["additionalProperties"]["enum"].clone(),
        )
        .expect("enum");
        assert_eq!(
            statuses,
            InstanceStatus::ALL.map(|s| s.as_str().to_string()).to_vec()
        );
        assert_eq!(
            schema_at(&json, "status.appStatus")["enum"],
            json!(["Pending", "Running", "Failed", "Succ", "Killed"])
        );
        assert!(
            schema_at(&json, "status.appStatus")["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Aggregated state: Pending"))
        );
        assert_eq!(
            schema_at(
                &json,
                "spec.persistentVolumeClaimRetentionPolicy.whenScaled"
            )["enum"],
            json!(["Retain", "Delete"])
        );
        // The pod template is validated (real schema), not preserved as free-form data.
        let containers = schema_at(&json, "spec.template.spec.containers");
        assert_eq!(containers["type"], "array");
        assert!(
            containers["items"]["required"]
                .as_array()
                .expect("required")
                .contains(&json!("name"))
        );
        let pool = schema_at(&json, "spec.templatePool");
        assert_eq!(
            pool["additionalProperties"]["properties"]["spec"]["type"],
            "object"
        );
        // Descriptions are stripped inside embedded types but kept on our field.
        assert!(schema_at(&json, "spec.template")["description"].is_string());
        assert!(
            schema_at(&json, "spec.template.spec")
                .get("description")
                .is_none()
        );
        let required = schema_at(&json, "spec")["required"].clone();
        assert_eq!(required, json!(["template"]));
    }
}
