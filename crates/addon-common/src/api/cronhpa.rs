//! `extensions.tkestack.io/v1` CronHPA: sets the replicas of any scalable workload on cron
//! schedules. Wire-compatible with `tkestack.io/cron-hpa`
//! (`pkg/apis/cronhpacontroller/v1/types.go`) plus optional, additive fields (time zone, suspend,
//! starting deadline, excluded dates, per-cron status and conditions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::embedded_condition_list;

/// API group of CronHPA.
pub const GROUP: &str = "extensions.tkestack.io";
/// API version of CronHPA.
pub const VERSION: &str = "v1";
/// `apiVersion` of CronHPA objects.
pub const API_VERSION: &str = "extensions.tkestack.io/v1";
/// Kind of CronHPA objects.
pub const KIND: &str = "CronHPA";

/// Condition type: the object is valid and scheduled.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the object cannot be scheduled (bad schedule, time zone, target...).
pub const CONDITION_INVALID: &str = "Invalid";

/// Event reason of a successful scale (message "New size: N"), as the original.
pub const REASON_SUCCESSFUL_RESCALE: &str = "SuccessfulRescale";
/// Event reason when reading the target's scale subresource failed, as the original.
pub const REASON_FAILED_GET_SCALE: &str = "FailedGetScale";
/// Event reason when writing the target's scale subresource failed, as the original.
pub const REASON_FAILED_RESCALE: &str = "FailedRescale";

/// Desired state of a CronHPA: which workload to scale and to how many replicas at which times.
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.tkestack.io",
    version = "v1",
    kind = "CronHPA",
    plural = "cronhpas",
    singular = "cronhpa",
    namespaced,
    status = "CronHPAStatus",
    derive = "PartialEq",
    doc = "CronHPA (tkestack.io) sets the replicas of a scalable workload (anything with a scale subresource) on cron schedules.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name",
        description = "Name of the scaled workload"
    ),
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.kind",
        description = "Kind of the scaled workload",
        priority = 1
    ),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "Time of the last applied schedule"
    ),
    printcolumn(
        name = "Next Schedule",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "Next time any schedule fires (empty when suspended or invalid)"
    ),
    printcolumn(
        name = "Time Zone",
        type_ = "string",
        json_path = ".spec.timeZone",
        description = "Time zone of the schedules (empty: the controller's default)",
        priority = 1
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether firing is paused",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CronHPASpec {
    /// The workload to scale, in the CronHPA's namespace. Any kind with a scale subresource
    /// (Deployment, StatefulSet, ReplicaSet, TApp, ...) works.
    pub scale_target_ref: CrossVersionObjectReference,

    /// The schedules (at least one). When several are due, the latest occurrence wins (ties:
    /// the later entry).
    #[schemars(length(min = 1))]
    pub crons: Vec<Cron>,

    /// IANA time zone of the schedules, e.g. "Asia/Shanghai". Default: the controller's
    /// --default-time-zone flag (UTC unless set). Extension of this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,

    /// Pause firing without deleting the object. Occurrences missed while suspended are not
    /// replayed beyond startingDeadlineSeconds. Default false. Extension of this
    /// implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// How late, in seconds, a missed occurrence may still be applied (after downtime or
    /// suspension); older ones are skipped. Default: no limit. Extension of this
    /// implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,

    /// Cron expressions of days on which no schedule fires, e.g. "* * 1 1 *" (January 1st) or
    /// "* * * * 0,6" (weekends); only the day fields are significant. Extension of this
    /// implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_dates: Option<Vec<String>>,
}

/// Reference to the scaled workload (autoscaling CrossVersionObjectReference).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossVersionObjectReference {
    /// API version of the target, e.g. "apps/v1" or "apps.tkestack.io/v1". May be omitted
    /// for the well-known kinds: Deployment, StatefulSet and ReplicaSet (apps/v1),
    /// ReplicationController (v1), TApp (apps.tkestack.io/v1) and HorizontalPodAutoscaler
    /// (autoscaling/v2); required for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,

    /// Kind of the target, e.g. "Deployment".
    #[schemars(length(min = 1))]
    pub kind: String,

    /// Name of the target in the CronHPA's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// One schedule: at each occurrence of `schedule`, set the target's replicas to
/// `targetReplicas`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cron {
    /// Standard 5-field cron expression "minute hour day-of-month month day-of-week" (names
    /// such as jan or sun, `* , - / ?`, day-of-week 0-7 with 0 and 7 both Sunday), or a
    /// descriptor: @yearly, @monthly, @weekly, @daily, @hourly, @every <duration>.
    #[schemars(length(min = 1))]
    pub schedule: String,

    /// Replicas to set when the schedule fires.
    #[schemars(range(min = 0))]
    pub target_replicas: i32,
}

/// Observed state of a CronHPA.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronHPAStatus {
    /// Scheduled time of the last occurrence that was applied (the only status field of the
    /// original). Occurrences up to this time are never applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// Per-schedule state, in the order of spec.crons. Extension of this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crons: Option<Vec<CronStatus>>,

    /// Standard conditions: Ready (scheduled and working) and Invalid (cannot be scheduled, with
    /// the reason). Extension of this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "embedded_condition_list::<Condition>")]
    pub conditions: Option<Vec<Condition>>,

    /// The metadata.generation this status was computed for. Extension of this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Next time any schedule fires: the earliest of status.crons[].nextScheduleTime (absent
    /// when suspended, invalid, or when no schedule has an upcoming occurrence). Extension of
    /// this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
}

/// State of one schedule of spec.crons.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronStatus {
    /// The schedule this entry describes (copied from spec.crons).
    pub schedule: String,

    /// Scheduled time of the last occurrence of this schedule that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// Next time this schedule fires (absent when suspended or invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// Outcome of the last occurrence: Succeeded (target scaled or already at size), Failed
    /// (scaling failed, will be retried), Skipped (superseded by a later occurrence, past the
    /// starting deadline, or on an excluded date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<CronResult>,

    /// Human-readable detail of the last result or of why the schedule is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a schedule occurrence.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum CronResult {
    /// The target was scaled (or already had the requested replicas).
    Succeeded,
    /// Scaling failed.
    Failed,
    /// The occurrence was not applied.
    Skipped,
}

impl CronHPASpec {
    /// Whether firing is paused (`suspend: true`).
    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// The `excludeDates` expressions (empty when absent).
    pub fn exclude_dates(&self) -> &[String] {
        self.exclude_dates.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{
        assert_described, assert_structural, crd_json, load_fixture, roundtrip_exact, schema_at,
    };
    use kube::core::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn seed_examples_deserialize_and_roundtrip() {
        let (weekly, original): (CronHPA, _) = load_fixture("cronhpa-weekly.yaml");
        assert_eq!(weekly.spec.scale_target_ref.kind, "Deployment");
        assert_eq!(weekly.spec.scale_target_ref.name, "demo-deployment");
        assert_eq!(weekly.spec.crons[1].schedule, "0 23 * * 7");
        assert_eq!(weekly.spec.crons[1].target_replicas, 30);
        roundtrip_exact(&weekly, &original, &[]);

        let (daily, original): (CronHPA, _) = load_fixture("cronhpa-daily.yaml");
        assert_eq!(daily.spec.crons.len(), 4);
        assert!(!daily.spec.is_suspended());
        assert!(daily.spec.exclude_dates().is_empty());
        roundtrip_exact(&daily, &original, &[]);

        // `kubectl get cronhpa -o yaml` output of the seed (keys sorted, schedules unquoted).
        let (listed, original): (CronHPA, _) = load_fixture("cronhpa-get-output.yaml");
        assert_eq!(listed.spec.crons[0].schedule, "0 20 * * 5");
        roundtrip_exact(&listed, &original, &[]);
    }

    #[test]
    fn extension_fields_roundtrip() {
        let value = json!({
            "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "crons": [{"schedule": "@every 90m", "targetReplicas": 0}],
                "timeZone": "Asia/Shanghai", "suspend": true, "startingDeadlineSeconds": 300,
                "excludeDates": ["* * 1 1 *"]
            },
            "status": {
                "lastScheduleTime": "2024-01-01T08:00:00Z",
                "crons": [{"schedule": "@every 90m", "lastScheduleTime": "2024-01-01T08:00:00Z",
                           "nextScheduleTime": "2024-01-01T09:30:00Z", "lastResult": "Skipped",
                           "message": "excluded date"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                                "message": "", "lastTransitionTime": "2024-01-01T08:00:00Z"}],
                "observedGeneration": 3,
                "nextScheduleTime": "2024-01-01T09:30:00Z"
            }
        });
        let c: CronHPA = serde_json::from_value(value.clone()).expect("cronhpa");
        assert!(c.spec.is_suspended());
        assert_eq!(
            c.status
                .as_ref()
                .and_then(|s| s.crons.as_ref())
                .map(|v| v[0].last_result),
            Some(Some(CronResult::Skipped))
        );
        assert_eq!(serde_json::to_value(&c).expect("json"), value);
    }

    #[test]
    fn crd_golden() {
        let crd = CronHPA::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("cronhpas.extensions.tkestack.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "CronHPA");
        assert_eq!(crd.spec.names.plural, "cronhpas");
        assert_eq!(crd.spec.names.singular.as_deref(), Some("cronhpa"));
        assert!(crd.spec.names.short_names.is_none());
        let version = &crd.spec.versions[0];
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        assert!(sub.scale.is_none());
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.json_path.as_str(),
                    c.priority.unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("Target", ".spec.scaleTargetRef.name", 0),
                ("Kind", ".spec.scaleTargetRef.kind", 1),
                ("Last Schedule", ".status.lastScheduleTime", 0),
                ("Next Schedule", ".status.nextScheduleTime", 0),
                ("Time Zone", ".spec.timeZone", 1),
                ("Suspend", ".spec.suspend", 1),
                ("Age", ".metadata.creationTimestamp", 0),
            ]
        );

        let json = crd_json(&crd);
        assert_structural(&json);
        assert_described(&json, &["status.conditions"]);
        assert_eq!(
            schema_at(&json, "spec")["required"],
            json!(["crons", "scaleTargetRef"])
        );
        assert_eq!(
            schema_at(&json, "spec.scaleTargetRef")["required"],
            json!(["kind", "name"])
        );
        assert_eq!(
            schema_at(&json, "spec.crons")["items"]["required"],
            json!(["schedule", "targetReplicas"])
        );
        assert_eq!(
            schema_at(&json, "spec.crons")["items"]["properties"]["targetReplicas"]["minimum"]
                .as_f64(),
            Some(0.0)
        );
        assert_eq!(
            schema_at(&json, "spec.startingDeadlineSeconds")["minimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(schema_at(&json, "spec.timeZone")["type"], "string");
        assert_eq!(
            schema_at(&json, "spec.excludeDates")["items"]["type"],
            "string"
        );
        let conditions = schema_at(&json, "status.conditions");
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        assert_eq!(
            schema_at(&json, "status.crons")["items"]["properties"]["lastResult"]["enum"],
            json!(["Succeeded", "Failed", "Skipped"])
        );
        // The field's own description survives on an Option<enum> field.
        assert!(
            schema_at(&json, "status.crons")["items"]["properties"]["lastResult"]["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Outcome of the last occurrence"))
        );
        assert_eq!(
            schema_at(&json, "status.lastScheduleTime")["format"],
            "date-time"
        );
    }
}
