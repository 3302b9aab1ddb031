//! Pods: initial phase, spec defaults, the pod update rules, `pods/resize`, binding and
//! eviction, and graceful deletion of bound pods.

use serde_json::{Value, json};

use super::{Action, Cleanup, DeleteStep, Strategy};
use crate::defaults;
use crate::registry::{ExtraSubresource, ResourceInfo};
use crate::store::meta_mut;

/// The pod strategy.
#[derive(Debug)]
pub struct Pods {
    /// Bound pods are deleted gracefully: a kubelet finishes the deletion.
    pub graceful_deletion: bool,
}

impl Strategy for Pods {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            defaults::pod_spec(spec);
        }
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate_update(&self, cur: &Value, new: &Value) -> Option<(String, String)> {
        defaults::pod_update_violation(cur, new)
    }

    fn allows_subresource(&self, info: &ResourceInfo, sub: &str) -> bool {
        sub == "resize" || (sub == "status" && info.status)
    }

    fn subresource_update(&self, sub: &str, cur: &Value, new: Value) -> Value {
        match sub {
            "resize" => resize(cur, &new),
            "status" => super::status_only(cur, new),
            _ => new,
        }
    }

    fn action(&self, sub: &str) -> Option<Action> {
        match sub {
            "binding" => Some(Action::Bind),
            "eviction" => Some(Action::Evict),
            _ => None,
        }
    }

    fn extra_subresources(&self) -> Vec<ExtraSubresource> {
        vec![
            ExtraSubresource::new("binding", "", "v1", "Binding", &["create"]),
            ExtraSubresource::new("resize", "", "v1", "Pod", &["get", "patch", "update"]),
            ExtraSubresource::new("eviction", "policy", "v1", "Eviction", &["create"]),
        ]
    }

    fn delete(&self, obj: &Value, deleting: bool, grace: Option<i64>) -> DeleteStep {
        if !self.graceful_deletion {
            return DeleteStep::Standard;
        }
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let terminal = matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let grace = grace.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        if !bound || terminal || grace <= 0 {
            return DeleteStep::Standard;
        }
        if deleting {
            return DeleteStep::Keep;
        }
        let ts = (chrono::Utc::now() + chrono::Duration::seconds(grace))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut obj = obj.clone();
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(ts));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        DeleteStep::Mark {
            obj,
            cleanup: Cleanup::None,
        }
    }

    fn removal_blocked(&self, obj: &Value) -> bool {
        self.graceful_deletion
            && obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
    }

    fn delete_returns_object(&self) -> bool {
        true
    }
}

/// `pods/resize`: only the containers' resources (and resizePolicy) change.
fn resize(cur: &Value, new: &Value) -> Value {
    let wanted = new
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = cur.clone();
    if let Some(cs) = out
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            let name = c.get("name").cloned();
            let Some(w) = wanted.iter().find(|w| w.get("name") == name.as_ref()) else {
                continue;
            };
            for k in ["resources", "resizePolicy"] {
                match w.get(k) {
                    Some(v) => c[k] = v.clone(),
                    None => {
                        if let Some(m) = c.as_object_mut() {
                            m.remove(k);
                        }
                    }
                }
            }
        }
    }
    out
}
