//! Built-in defaulting (the subset of kube-apiserver's defaulters controllers rely on).

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

static NEXT_IP: AtomicU32 = AtomicU32::new(10);
static NEXT_NODE_PORT: AtomicU32 = AtomicU32::new(30000);

/// On Service create: allocate a ClusterIP from 10.96.0.0/12 and node ports from 30000-32767
/// (sequentially, never reused).
pub fn allocate_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return;
    }
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ip.is_empty() {
        let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
        let ip = format!(
            "10.{}.{}.{}",
            96 + (n >> 16) % 16,
            (n >> 8) & 0xff,
            n & 0xff
        );
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    } else if spec.get("clusterIPs").is_none() {
        spec["clusterIPs"] = json!([ip]);
    }
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("nodePort").is_none() {
                    let np =
                        30000 + (NEXT_NODE_PORT.fetch_add(1, Ordering::Relaxed) - 30000) % 2768;
                    p["nodePort"] = json!(np);
                }
            }
        }
    }
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
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

fn template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// Apply defaults for a built-in kind (group, plural).
pub fn apply(group: &str, plural: &str, obj: &mut Value) {
    match (group, plural) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
        }
        ("", "secrets") => set_default(obj, "type", json!("Opaque")),
        ("", "services") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
            template(obj);
        }
        ("apps", "replicasets") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
            }
            template(obj);
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
            }
            template(obj);
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template(obj);
        }
        ("batch", "jobs") => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "completions", json!(1));
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
            if let Some(t) = obj.pointer_mut("/spec/template/spec") {
                set_default(t, "restartPolicy", json!("Never"));
            }
            template(obj);
        }
        _ => {}
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

/// Update validation of immutable fields of built-in kinds (the checks controllers trip over):
/// pod spec, workload selectors, job selector/template, service clusterIP.
/// Returns (field, message) on violation.
pub fn immutable_violation(
    group: &str,
    plural: &str,
    old: &Value,
    new: &Value,
) -> Option<(String, String)> {
    let ptr = |v: &'_ Value, p: &str| v.pointer(p).cloned();
    let immutable = |p: &str, field: &str| -> Option<(String, String)> {
        let (o, n) = (ptr(old, p), ptr(new, p));
        (o != n).then(|| {
            let shown = n.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
            (
                field.to_string(),
                format!("Invalid value: {shown}: field is immutable"),
            )
        })
    };
    match (group, plural) {
        ("", "pods") => {
            let (o, n) = (
                old.get("spec").cloned().unwrap_or(Value::Null),
                new.get("spec").cloned().unwrap_or(Value::Null),
            );
            // tolerations may only be added
            let old_tol = o
                .get("tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let new_tol = n
                .get("tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let tol_ok = old_tol.iter().all(|t| new_tol.contains(t));
            if masked_pod_spec(&o) != masked_pod_spec(&n) || !tol_ok {
                return Some((
                    "spec".into(),
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                ));
            }
            None
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            immutable("/spec/selector", "spec.selector")
        }
        ("batch", "jobs") => immutable("/spec/selector", "spec.selector").or_else(|| {
            // the template is immutable except while the job is suspended
            let suspended = new.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
            if suspended {
                None
            } else {
                immutable("/spec/template", "spec.template")
            }
        }),
        ("", "services") => {
            let o = old
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let n = new
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (!o.is_empty() && !n.is_empty() && o != n).then(|| {
                (
                    "spec.clusterIPs[0]".into(),
                    format!("Invalid value: []string{{\"{n}\"}}: may not change once set"),
                )
            })
        }
        _ => None,
    }
}
