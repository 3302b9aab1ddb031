//! Patch formats: JSON merge patch, JSON patch, strategic merge patch, and a server-side-apply
//! approximation based on managedFields field sets.

use serde_json::{Map, Value, json};

use crate::errors::{ApiError, ApiResult, Cause};

/// Patch content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// application/merge-patch+json
    Merge,
    /// application/json-patch+json
    Json,
    /// application/strategic-merge-patch+json
    Strategic,
    /// application/apply-patch+yaml
    Apply,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Merge key of a list field for strategic merge (by field name, as the built-in types declare).
pub fn merge_key(field: &str, sample: &[&Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            if sample.iter().any(|v| v.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

fn primitive_merge_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

/// Apply a strategic merge patch to an object.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> ApiResult<()> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            merge_map(t, p, true);
            Ok(())
        }
        _ => Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        )),
    }
}

/// Merge `patch` into `orig`. `strategic` enables merge keys; otherwise lists are replaced.
pub fn merge_map(orig: &mut Map<String, Value>, patch: &Map<String, Value>, strategic: bool) {
    if strategic && patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *orig = strip(&Value::Object(patch.clone()))
            .as_object()
            .cloned()
            .unwrap_or_default();
        return;
    }
    for (k, pv) in patch {
        if strategic && k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Some(del)) = (orig.get_mut(field), pv.as_array())
            {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            orig.remove(k);
            continue;
        }
        match (orig.get_mut(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                if strategic && p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.remove(k);
                } else {
                    merge_map(o, p, strategic);
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) if strategic => merge_list(k, o, p),
            (_, Value::Object(p))
                if strategic && p.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                orig.remove(k);
            }
            (_, pv) => {
                let v = if strategic {
                    strip(pv)
                } else {
                    merge_fresh(pv)
                };
                orig.insert(k.clone(), v);
            }
        }
    }
}

/// JSON merge patch semantics for a new value: nulls inside are dropped.
fn merge_fresh(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), merge_fresh(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_list(field: &str, orig: &mut Vec<Value>, patch: &[Value]) {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *orig = patch
            .iter()
            .filter(|p| p.get("$patch").and_then(Value::as_str) != Some("replace"))
            .map(strip)
            .collect();
        return;
    }
    let sample: Vec<&Value> = orig.iter().chain(patch.iter()).collect();
    match merge_key(field, &sample) {
        Some(key) if patch.iter().all(Value::is_object) => {
            for p in patch {
                let kv = p.get(key);
                let pos = orig
                    .iter()
                    .position(|o| o.get(key).is_some() && o.get(key) == kv);
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.retain(|o| !(o.get(key).is_some() && o.get(key) == kv));
                    continue;
                }
                match (pos, p.as_object()) {
                    (Some(i), Some(pm)) => {
                        if let Some(om) = orig[i].as_object_mut() {
                            merge_map(om, pm, true);
                        }
                    }
                    _ => orig.push(strip(p)),
                }
            }
        }
        _ if primitive_merge_list(field) => {
            for p in patch {
                if !orig.contains(p) {
                    orig.push(p.clone());
                }
            }
        }
        _ => *orig = patch.iter().map(strip).collect(),
    }
}

/// Apply a JSON patch (RFC 6902).
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &p).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

/// JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("merge patch must be a JSON object"));
    }
    json_patch::merge(target, patch);
    Ok(())
}

fn key_str(key: &str, v: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.into(), v.get(key).cloned().unwrap_or(Value::Null));
    format!("k:{}", Value::Object(m))
}

/// The managedFields `fieldsV1` set of a (applied) configuration.
pub fn fields_v1(v: &Value, strategic: bool) -> Value {
    fn walk(v: &Value, field: &str, strategic: bool) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, c) in m {
                    if field.is_empty() && k == "metadata" {
                        let mut mm = Map::new();
                        for sub in ["labels", "annotations", "finalizers", "ownerReferences"] {
                            if let Some(x) = c.get(sub) {
                                mm.insert(format!("f:{sub}"), walk(x, sub, strategic));
                            }
                        }
                        if !mm.is_empty() {
                            out.insert("f:metadata".into(), Value::Object(mm));
                        }
                        continue;
                    }
                    if field.is_empty() && (k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    out.insert(format!("f:{k}"), walk(c, k, strategic));
                }
                Value::Object(out)
            }
            Value::Array(a) if strategic => {
                let sample: Vec<&Value> = a.iter().collect();
                match merge_key(field, &sample) {
                    Some(key) if a.iter().all(Value::is_object) => {
                        let mut out = Map::new();
                        for item in a {
                            let mut inner = walk(item, "", strategic)
                                .as_object()
                                .cloned()
                                .unwrap_or_default();
                            inner.insert(".".into(), json!({}));
                            out.insert(key_str(key, item), Value::Object(inner));
                        }
                        Value::Object(out)
                    }
                    _ => json!({}),
                }
            }
            _ => json!({}),
        }
    }
    walk(v, "", strategic)
}

/// Remove from `target` the fields in `owned` that `applied` no longer sets.
fn remove_dropped(target: &mut Value, owned: &Value, applied: &Value) {
    let Some(owned) = owned.as_object() else {
        return;
    };
    match target {
        Value::Object(t) => {
            for (k, sub) in owned {
                if let Some(name) = k.strip_prefix("f:") {
                    let in_applied = applied.get(name);
                    match in_applied {
                        None => {
                            t.remove(name);
                        }
                        Some(a) => {
                            if let Some(child) = t.get_mut(name) {
                                remove_dropped(child, sub, a);
                            }
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            for (k, sub) in owned {
                let Some(js) = k.strip_prefix("k:") else {
                    continue;
                };
                let Ok(Value::Object(keyobj)) = serde_json::from_str::<Value>(js) else {
                    continue;
                };
                let matches = |it: &Value| keyobj.iter().all(|(kk, vv)| it.get(kk) == Some(vv));
                let applied_item = applied
                    .as_array()
                    .and_then(|a| a.iter().find(|it| matches(it)));
                match applied_item {
                    None => items.retain(|it| !matches(it)),
                    Some(a) => {
                        for it in items.iter_mut().filter(|it| matches(it)) {
                            remove_dropped(it, sub, a);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Leaf paths of a field set (`.spec.replicas`).
fn leaves(fs: &Value, prefix: &str, out: &mut Vec<(String, Vec<String>)>, steps: &mut Vec<String>) {
    let Some(m) = fs.as_object() else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        out.push((prefix.to_string(), steps.clone()));
        return;
    }
    for (k, sub) in children {
        let (p, step) = if let Some(n) = k.strip_prefix("f:") {
            (format!("{prefix}.{n}"), format!("f:{n}"))
        } else {
            (format!("{prefix}[{}]", &k[2..]), k.clone())
        };
        steps.push(step);
        leaves(sub, &p, out, steps);
        steps.pop();
    }
}

fn lookup<'a>(v: &'a Value, steps: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for s in steps {
        if let Some(n) = s.strip_prefix("f:") {
            cur = cur.get(n)?;
        } else {
            let js = s.strip_prefix("k:")?;
            let keyobj: Map<String, Value> = serde_json::from_str(js).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|it| keyobj.iter().all(|(kk, vv)| it.get(kk) == Some(vv)))?;
        }
    }
    Some(cur)
}

/// Server-side apply of `applied` onto `existing` (None = create) for `manager`.
/// Returns the new object (managedFields updated).
pub fn server_side_apply(
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    strategic: bool,
    api_version: &str,
) -> ApiResult<Value> {
    let new_fields = fields_v1(applied, strategic);
    let mut managed: Vec<Value> = existing
        .and_then(|e| e.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut result = match existing {
        None => strip(applied),
        Some(e) => {
            let mut r = e.clone();
            // conflicts with other appliers owning a leaf we now set differently
            let mut conflicts = Vec::new();
            for entry in &managed {
                let m = entry
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if m == manager || entry.get("operation").and_then(Value::as_str) != Some("Apply") {
                    continue;
                }
                let mut ls = Vec::new();
                leaves(
                    entry.get("fieldsV1").unwrap_or(&Value::Null),
                    "",
                    &mut ls,
                    &mut Vec::new(),
                );
                for (path, steps) in ls {
                    if let (Some(want), cur) = (lookup(applied, &steps), lookup(e, &steps))
                        && Some(want) != cur
                        && !want.is_object()
                    {
                        conflicts.push((m.to_string(), path));
                    }
                }
            }
            if !conflicts.is_empty() && !force {
                let causes: Vec<Cause> = conflicts
                    .iter()
                    .map(|(m, p)| {
                        Cause::new("FieldManagerConflict", p, format!("conflict with \"{m}\""))
                    })
                    .collect();
                let msg = format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts
                        .iter()
                        .map(|(m, p)| format!("conflict with \"{m}\": {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                let mut err = ApiError::new(409, "Conflict", msg);
                err.details = Some(
                    json!({"causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()}),
                );
                return Err(err);
            }
            if let Some(prev) = managed
                .iter()
                .find(|m| {
                    m.get("manager").and_then(Value::as_str) == Some(manager)
                        && m.get("operation").and_then(Value::as_str) == Some("Apply")
                })
                .and_then(|m| m.get("fieldsV1"))
            {
                remove_dropped(&mut r, prev, applied);
            }
            if let (Some(rm), Some(am)) = (r.as_object_mut(), applied.as_object()) {
                merge_map(rm, am, strategic);
            }
            r
        }
    };
    managed.retain(|m| {
        !(m.get("manager").and_then(Value::as_str) == Some(manager)
            && m.get("operation").and_then(Value::as_str) == Some("Apply"))
    });
    managed.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": crate::store::now_ts(),
        "fieldsType": "FieldsV1",
        "fieldsV1": new_fields,
    }));
    crate::store::meta_mut(&mut result).insert("managedFields".into(), Value::Array(managed));
    Ok(result)
}

/// Record an `Update` managedFields entry for `manager`.
pub fn record_update(obj: &mut Value, manager: &str, api_version: &str, fields: Value) {
    if manager.is_empty() {
        return;
    }
    let meta = crate::store::meta_mut(obj);
    let mut managed: Vec<Value> = meta
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    managed.retain(|m| {
        !(m.get("manager").and_then(Value::as_str) == Some(manager)
            && m.get("operation").and_then(Value::as_str) == Some("Update"))
    });
    managed.push(json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": crate::store::now_ts(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }));
    meta.insert("managedFields".into(), Value::Array(managed));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strategic_containers_and_directives() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "tolerations": [{"key": "k"}]},
            "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "image": "x2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "z"}],
            "$setElementOrder/containers": [{"name": "a"}], "tolerations": [{"key": "t"}]}, "metadata": {"finalizers": ["f2"]}});
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "x2"}, {"name": "c", "image": "z"}])
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "t"}]));
        assert_eq!(pod["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    #[test]
    fn ssa_removes_dropped_fields_and_conflicts() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let o = server_side_apply(None, &a1, "m1", false, true, "v1").unwrap();
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let o2 = server_side_apply(Some(&o), &a2, "m1", false, true, "v1").unwrap();
        assert_eq!(o2["data"], json!({"a": "1"}));
        let a3 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}});
        let err = server_side_apply(Some(&o2), &a3, "m2", false, true, "v1").unwrap_err();
        assert_eq!(err.code, 409);
        let o3 = server_side_apply(Some(&o2), &a3, "m2", true, true, "v1").unwrap();
        assert_eq!(o3["data"]["a"], "9");
    }
}
