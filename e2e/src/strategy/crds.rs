//! CustomResourceDefinitions: validated names and versions, the status the server sets
//! (accepted names, stored versions, conditions), and the served resources they define
//! (registered on write, dropped with their objects on delete).

use serde_json::{Value, json};

use super::Strategy;
use crate::errors::ApiResult;
use crate::registry::{GroupResource, Registry, ResourceInfo, crd_resources};
use crate::store::{self, Store, is_deleting};

/// The CustomResourceDefinition strategy.
#[derive(Debug)]
pub struct Crds;

impl Strategy for Crds {
    fn prepare_create(&self, _info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        crd_resources(obj)?;
        let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let storage: Vec<Value> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let now = store::now_ts();
        obj["status"] = json!({
            "acceptedNames": names,
            "storedVersions": storage,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
            ]
        });
        Ok(())
    }

    fn prepare_update(&self, info: &ResourceInfo, cur: &Value, new: &mut Value) -> ApiResult<()> {
        if info.status {
            super::keep_status(cur, new);
        }
        crd_resources(new)?;
        if let Some(s) = cur.get("status") {
            new["status"] = s.clone();
        }
        new["status"]["acceptedNames"] = new.pointer("/spec/names").cloned().unwrap_or(json!({}));
        Ok(())
    }

    fn delete_returns_object(&self) -> bool {
        true
    }

    fn after_write(&self, registry: &Registry, obj: &Value) {
        if !is_deleting(obj)
            && let Ok(infos) = crd_resources(obj)
            && let Some(first) = infos.first()
        {
            let (g, p) = (first.group.clone(), first.plural.clone());
            registry.set_crd(&g, &p, infos);
        }
    }

    fn after_delete(&self, registry: &Registry, store: &Store, obj: &Value) {
        let text = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (g, p) = (text("/spec/group"), text("/spec/names/plural"));
        store.drop_all(&GroupResource::new(&g, &p));
        registry.remove_crd(&g, &p);
    }
}
