//! Workloads (deployments, replica sets, stateful sets, daemon sets, jobs): spec and pod
//! template defaults, the immutable selector (and a job's template unless suspended).

use serde_json::{Value, json};

use super::Strategy;
use crate::defaults::{immutable, pod_template, set_default};

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
}

/// The workload strategy.
#[derive(Debug)]
pub struct Workload {
    kind: Kind,
}

impl Workload {
    /// The strategy of the workload resource `plural` (`deployments`, `jobs`, ...).
    pub fn new(plural: &str) -> Self {
        let kind = match plural {
            "deployments" => Kind::Deployment,
            "statefulsets" => Kind::StatefulSet,
            "daemonsets" => Kind::DaemonSet,
            "jobs" => Kind::Job,
            _ => Kind::ReplicaSet,
        };
        Workload { kind }
    }
}

fn spec_defaults(kind: Kind, spec: &mut Value) {
    match kind {
        Kind::Deployment => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        Kind::ReplicaSet => set_default(spec, "replicas", json!(1)),
        Kind::StatefulSet => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        Kind::DaemonSet => {
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        Kind::Job => {
            set_default(spec, "completions", json!(1));
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
        }
    }
}

impl Strategy for Workload {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            spec_defaults(self.kind, spec);
        }
        if self.kind == Kind::Job
            && let Some(t) = obj.pointer_mut("/spec/template/spec")
        {
            set_default(t, "restartPolicy", json!("Never"));
        }
        pod_template(obj);
    }

    fn validate_update(&self, cur: &Value, new: &Value) -> Option<(String, String)> {
        let selector = immutable(cur, new, "/spec/selector", "spec.selector");
        if self.kind != Kind::Job {
            return selector;
        }
        selector.or_else(|| {
            // the template is immutable except while the job is suspended
            let suspended = new.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
            if suspended {
                None
            } else {
                immutable(cur, new, "/spec/template", "spec.template")
            }
        })
    }
}
