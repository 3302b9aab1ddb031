//! Defaulting and update-validation helpers shared by the strategies of built-in kinds (the
//! subset of kube-apiserver's defaulters and validation controllers rely on).

use serde_json::{Value, json};

/// Sets `obj[key]` to `v` when absent.
pub fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && !m.contains_key(key)
    {
        m.insert(key.to_string(), v);
    }
}

/// Pod spec defaults (also used for workload templates).
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let latest = !image.contains(':') || image.ends_with(":latest");
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Pod spec defaults of a workload's `spec.template`.
pub fn pod_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

fn masked_pod_spec(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
        m.remove("schedulingGates");
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
    }
    s
}

/// `(field, message)` when the value at JSON pointer `ptr` differs between `old` and `new`.
pub fn immutable(old: &Value, new: &Value, ptr: &str, field: &str) -> Option<(String, String)> {
    let (o, n) = (old.pointer(ptr), new.pointer(ptr));
    (o != n).then(|| {
        let shown = n.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        (
            field.to_string(),
            format!("Invalid value: {shown}: field is immutable"),
        )
    })
}

/// Pod update validation: only images, activeDeadlineSeconds, added tolerations and
/// terminationGracePeriodSeconds may change in a pod's spec.
pub fn pod_update_violation(old: &Value, new: &Value) -> Option<(String, String)> {
    let null = Value::Null;
    let (o, n) = (
        old.get("spec").unwrap_or(&null),
        new.get("spec").unwrap_or(&null),
    );
    let tolerations = |s: &Value| {
        s.get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_tol, new_tol) = (tolerations(o), tolerations(n));
    let tol_ok = old_tol.iter().all(|t| new_tol.contains(t));
    if masked_pod_spec(o) != masked_pod_spec(n) || !tol_ok {
        return Some((
            "spec".into(),
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
        ));
    }
    None
}
