//! Validation of a CronHPA spec, shared by the admission webhook and the controller (an object
//! stored before the webhook existed is marked Invalid instead of being scheduled).

use addon_common::api::cronhpa::CronHPASpec;
use chrono_tz::Tz;

use crate::schedule::{
    Exclusions, Schedule, parse_exclusion, parse_schedule_cached, parse_time_zone,
};

/// One problem, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path such as `spec.crons[1].schedule`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec that passed validation, with everything parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The schedules, in the order of `spec.crons`.
    pub schedules: Vec<Schedule>,
    /// The time zone of the schedules.
    pub tz: Tz,
    /// `spec.excludeDates`.
    pub exclusions: Exclusions,
}

/// The `apiVersion` assumed when `scaleTargetRef.apiVersion` is empty, for well-known kinds.
pub fn default_api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => Some("apps/v1"),
        "TApp" => Some("apps.tkestack.io/v1"),
        "HorizontalPodAutoscaler" => Some("autoscaling/v2"),
        "ReplicationController" => Some("v1"),
        _ => None,
    }
}

/// Checks a spec; on success returns its parsed form, otherwise every problem found.
pub fn validate(spec: &CronHPASpec, default_tz: Tz) -> Result<Compiled, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut push = |field: String, message: String| errors.push(FieldError { field, message });

    let target = &spec.scale_target_ref;
    if target.kind.trim().is_empty() {
        push(
            "spec.scaleTargetRef.kind".into(),
            "required (e.g. Deployment)".into(),
        );
    }
    if target.name.trim().is_empty() {
        push("spec.scaleTargetRef.name".into(), "required".into());
    }
    match target.api_version.as_deref().map(str::trim) {
        Some("") | None => {
            if !target.kind.trim().is_empty() && default_api_version(&target.kind).is_none() {
                push(
                    "spec.scaleTargetRef.apiVersion".into(),
                    format!(
                        "required for kind {:?} (only Deployment, StatefulSet, ReplicaSet, \
                         ReplicationController, TApp and HorizontalPodAutoscaler have a default)",
                        target.kind
                    ),
                );
            }
        }
        Some(v) => {
            let parts: Vec<&str> = v.split('/').collect();
            let ok = match parts.as_slice() {
                [version] => !version.is_empty(),
                [group, version] => !group.is_empty() && !version.is_empty(),
                _ => false,
            };
            if !ok {
                push(
                    "spec.scaleTargetRef.apiVersion".into(),
                    format!("{v:?} is not of the form group/version or version"),
                );
            } else if target.kind == "HorizontalPodAutoscaler"
                && parts.first() != Some(&"autoscaling")
            {
                push(
                    "spec.scaleTargetRef.apiVersion".into(),
                    format!(
                        "a HorizontalPodAutoscaler target must be in group autoscaling, got {v:?}"
                    ),
                );
            }
        }
    }

    if spec.crons.is_empty() {
        push(
            "spec.crons".into(),
            "must contain at least one schedule".into(),
        );
    }
    let mut schedules = Vec::with_capacity(spec.crons.len());
    for (i, cron) in spec.crons.iter().enumerate() {
        match parse_schedule_cached(&cron.schedule) {
            Ok(s) => schedules.push(s),
            Err(e) => push(
                format!("spec.crons[{i}].schedule"),
                format!("invalid schedule {:?}: {e}", cron.schedule),
            ),
        }
        if cron.target_replicas < 0 {
            push(
                format!("spec.crons[{i}].targetReplicas"),
                format!("must be 0 or more, got {}", cron.target_replicas),
            );
        }
    }

    let tz = match spec.time_zone.as_deref() {
        None | Some("") => Some(default_tz),
        Some(name) => match parse_time_zone(name) {
            Ok(tz) => Some(tz),
            Err(e) => {
                push("spec.timeZone".into(), e);
                None
            }
        },
    };

    if let Some(d) = spec.starting_deadline_seconds
        && d < 0
    {
        push(
            "spec.startingDeadlineSeconds".into(),
            format!("must be 0 or more, got {d}"),
        );
    }

    for (i, expr) in spec.exclude_dates().iter().enumerate() {
        if let Err(e) = parse_exclusion(expr) {
            push(
                format!("spec.excludeDates[{i}]"),
                format!("invalid expression {expr:?}: {e}"),
            );
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let exclusions = Exclusions::parse(spec.exclude_dates()).map_err(|(i, message)| {
        vec![FieldError {
            field: format!("spec.excludeDates[{i}]"),
            message,
        }]
    })?;
    let tz = tz.unwrap_or(default_tz);
    Ok(Compiled {
        schedules,
        tz,
        exclusions,
    })
}

/// All problems on one line, as Events, conditions and admission responses show them.
pub fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> CronHPASpec {
        serde_json::from_value(v).expect("spec")
    }

    fn base() -> serde_json::Value {
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "0 8 * * *", "targetReplicas": 60},
                      {"schedule": "0 23 * * 7", "targetReplicas": 30}]
        })
    }

    fn errors_of(v: serde_json::Value) -> Vec<String> {
        match validate(&spec(v), Tz::UTC) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn webhook_validation_table() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (base(), vec![]),
            (
                {
                    let mut v = base();
                    v["crons"][1]["schedule"] = json!("0 23 * * 8");
                    v
                },
                vec![r#"spec.crons[1].schedule: invalid schedule "0 23 * * 8""#],
            ),
            (
                {
                    let mut v = base();
                    v["crons"][0]["targetReplicas"] = json!(-1);
                    v
                },
                vec!["spec.crons[0].targetReplicas: must be 0 or more, got -1"],
            ),
            (
                {
                    let mut v = base();
                    v["timeZone"] = json!("Mars/Olympus");
                    v
                },
                vec![r#"spec.timeZone: unknown time zone "Mars/Olympus""#],
            ),
            (
                {
                    let mut v = base();
                    v["timeZone"] = json!("Asia/Shanghai");
                    v["excludeDates"] = json!(["* * 1 1 *", "* * 32 * *"]);
                    v
                },
                vec![r#"spec.excludeDates[1]: invalid expression "* * 32 * *""#],
            ),
            (
                {
                    let mut v = base();
                    v["crons"] = json!([]);
                    v
                },
                vec!["spec.crons: must contain at least one schedule"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "", "name": ""},
                       "crons": [{"schedule": "@every 90m", "targetReplicas": 1}]}),
                vec![
                    "spec.scaleTargetRef.kind: required",
                    "spec.scaleTargetRef.name: required",
                ],
            ),
            (
                json!({"scaleTargetRef": {"kind": "CloneSet", "name": "x"},
                       "crons": [{"schedule": "@daily", "targetReplicas": 1}]}),
                vec!["spec.scaleTargetRef.apiVersion: required for kind \"CloneSet\""],
            ),
            (
                json!({"scaleTargetRef": {"kind": "Deployment", "name": "x"},
                       "crons": [{"schedule": "@daily", "targetReplicas": 1}]}),
                vec![],
            ),
            (
                json!({"scaleTargetRef": {"apiVersion": "a/b/c", "kind": "X", "name": "x"},
                       "crons": [{"schedule": "@daily", "targetReplicas": 1}]}),
                vec!["spec.scaleTargetRef.apiVersion: \"a/b/c\" is not of the form"],
            ),
            (
                json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "HorizontalPodAutoscaler", "name": "x"},
                       "crons": [{"schedule": "@daily", "targetReplicas": 1}]}),
                vec!["must be in group autoscaling"],
            ),
            (
                {
                    let mut v = base();
                    v["startingDeadlineSeconds"] = json!(-5);
                    v["crons"][0]["schedule"] = json!("bogus");
                    v
                },
                vec![
                    r#"spec.crons[0].schedule: invalid schedule "bogus": expected 5 fields"#,
                    "spec.startingDeadlineSeconds: must be 0 or more",
                ],
            ),
        ];
        for (input, want) in cases {
            let got = errors_of(input.clone());
            assert_eq!(got.len(), want.len(), "{input}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{g:?} should contain {w:?}");
            }
        }
    }

    #[test]
    fn seed_examples_are_valid() {
        for v in [
            json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-deployment"},
                   "crons": [{"schedule": "0 20 * * 5", "targetReplicas": 60},
                             {"schedule": "0 23 * * 7", "targetReplicas": 30}]}),
            json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-servers"},
                   "crons": [{"schedule": "0 8 * * *", "targetReplicas": 60},
                             {"schedule": "0 9 * * *", "targetReplicas": 10},
                             {"schedule": "0 19 * * *", "targetReplicas": 60},
                             {"schedule": "0 21 * * *", "targetReplicas": 10}]}),
        ] {
            let compiled = validate(&spec(v), Tz::UTC).expect("valid");
            assert_eq!(compiled.tz, Tz::UTC);
        }
    }
}
