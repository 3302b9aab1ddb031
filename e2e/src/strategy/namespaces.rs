//! Namespaces: the initial phase, the `kubernetes` finalizer and name label,
//! `namespaces/finalize`, and deletion (Terminating, then the contents go, then the namespace).

use serde_json::{Value, json};

use super::{Cleanup, DeleteStep, Strategy};
use crate::registry::{ExtraSubresource, ResourceInfo};
use crate::store::{meta_mut, meta_str};

/// The namespace strategy.
#[derive(Debug)]
pub struct Namespaces;

impl Strategy for Namespaces {
    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
        labels["kubernetes.io/metadata.name"] = json!(name);
    }

    fn allows_subresource(&self, info: &ResourceInfo, sub: &str) -> bool {
        sub == "finalize" || (sub == "status" && info.status)
    }

    fn subresource_update(&self, sub: &str, cur: &Value, new: Value) -> Value {
        match sub {
            "finalize" => finalize(cur, &new),
            "status" => super::status_only(cur, new),
            _ => new,
        }
    }

    fn extra_subresources(&self) -> Vec<ExtraSubresource> {
        vec![ExtraSubresource::new(
            "finalize",
            "",
            "v1",
            "Namespace",
            &["update"],
        )]
    }

    fn delete(&self, obj: &Value, deleting: bool, _grace: Option<i64>) -> DeleteStep {
        if deleting {
            return DeleteStep::Keep;
        }
        let mut obj = obj.clone();
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(crate::store::now_ts()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
        obj["status"]["phase"] = json!("Terminating");
        DeleteStep::Mark {
            obj,
            cleanup: Cleanup::NamespaceContents,
        }
    }

    fn removal_blocked(&self, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }
}

/// `namespaces/finalize`: only `spec.finalizers` changes.
fn finalize(cur: &Value, new: &Value) -> Value {
    let fins = new.pointer("/spec/finalizers").cloned();
    let mut out = cur.clone();
    match fins {
        Some(f) => out["spec"]["finalizers"] = f,
        None => {
            if let Some(s) = out.get_mut("spec").and_then(Value::as_object_mut) {
                s.remove("finalizers");
            }
        }
    }
    out
}
