//! `meta.k8s.io/v1` Table responses (kubectl get).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::store::meta_str;

/// kube's `HumanDuration`-style age.
pub fn human_age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let hh = h % 24;
        if hh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{hh}h")
        }
    } else {
        format!("{d}d")
    }
}

fn col(name: &str, ty: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

fn builtin_columns(info: &ResourceInfo) -> Option<&'static [(&'static str, &'static str, i64)]> {
    if info.crd {
        return None;
    }
    Some(match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        ("apps", "deployments") => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        ("apps", "replicasets") => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
        ],
        ("apps", "statefulsets") => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
        ],
        ("apps", "daemonsets") => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        ("batch", "jobs") => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "nodes") => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        ("", "namespaces") => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "services") => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "configmaps") => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        ("", "secrets") => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        ("", "persistentvolumeclaims") => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Age", "string", 0),
        ],
        ("coordination.k8s.io", "leases") => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "events") => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Name", "string", 1),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            &[("Name", "string", 0), ("Created At", "date", 0)]
        }
        _ => return None,
    })
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> Value {
    if x.is_empty() {
        json!("<none>")
    } else {
        json!(x)
    }
}

fn pod_status(obj: &Value) -> String {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = s(obj.pointer("/status/reason"));
    if reason.is_empty() {
        reason = s(obj.pointer("/status/phase"));
    }
    if let Some(cs) = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs {
            if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                reason = r.to_string();
            } else if let Some(r) = c
                .pointer("/state/terminated/reason")
                .and_then(Value::as_str)
            {
                reason = r.to_string();
            }
        }
    }
    reason
}

fn builtin_cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj.pointer("/metadata/name")));
    let age = json!(human_age(
        meta_str(obj, "creationTimestamp").unwrap_or_default()
    ));
    let st = |p: &str| status_field(obj, p);
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => pod_cells(obj, name, age),
        ("apps", "deployments") => vec![
            name,
            json!(format!(
                "{}/{}",
                n(st("readyReplicas")),
                n(obj.pointer("/spec/replicas"))
            )),
            json!(n(st("updatedReplicas"))),
            json!(n(st("availableReplicas"))),
            age,
        ],
        ("apps", "replicasets") => vec![
            name,
            json!(n(obj.pointer("/spec/replicas"))),
            json!(n(st("replicas"))),
            json!(n(st("readyReplicas"))),
            age,
        ],
        ("apps", "statefulsets") => vec![
            name,
            json!(format!(
                "{}/{}",
                n(st("readyReplicas")),
                n(obj.pointer("/spec/replicas"))
            )),
            age,
        ],
        ("apps", "daemonsets") => vec![
            name,
            json!(n(st("desiredNumberScheduled"))),
            json!(n(st("currentNumberScheduled"))),
            json!(n(st("numberReady"))),
            json!(n(st("updatedNumberScheduled"))),
            json!(n(st("numberAvailable"))),
            age,
        ],
        ("batch", "jobs") => job_cells(obj, name, age),
        ("", "nodes") => node_cells(obj, name, age),
        ("", "namespaces") => vec![name, json!(s(st("phase"))), age],
        ("", "services") => service_cells(obj, name, age),
        ("", "configmaps") => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![name, json!(count), age]
        }
        ("", "secrets") => vec![
            name,
            json!(s(obj.get("type"))),
            json!(
                obj.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            age,
        ],
        ("", "persistentvolumeclaims") => vec![
            name,
            json!(s(st("phase"))),
            json!(s(obj.pointer("/spec/volumeName"))),
            age,
        ],
        ("coordination.k8s.io", "leases") => {
            vec![name, or_none(s(obj.pointer("/spec/holderIdentity"))), age]
        }
        ("", "events") => event_cells(obj, name),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![name, json!(s(obj.pointer("/metadata/creationTimestamp")))]
        }
        _ => vec![name, age],
    }
}

/// The value at `/status/<path>` of `obj`.
fn status_field<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    obj.pointer(&format!("/status/{path}"))
}

fn pod_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let st = |p: &str| status_field(obj, p);
    let total = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let cs = st("containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = cs
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = cs.iter().map(|c| n(c.get("restartCount"))).sum();
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(pod_status(obj)),
        json!(restarts.to_string()),
        age,
        or_none(s(st("podIP"))),
        or_none(s(obj.pointer("/spec/nodeName"))),
    ]
}

fn job_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let st = |p: &str| status_field(obj, p);
    let conds = st("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let status = conds
        .iter()
        .find(|c| {
            c.get("status") == Some(&json!("True"))
                && matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("Complete" | "Failed" | "Suspended")
                )
        })
        .map(|c| s(c.get("type")))
        .unwrap_or_else(|| "Running".into());
    vec![
        name,
        json!(status),
        json!(format!(
            "{}/{}",
            n(st("succeeded")),
            obj.pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        age,
    ]
}

fn node_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let st = |p: &str| status_field(obj, p);
    let ready = st("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
        .map(|c| c.get("status") == Some(&json!("True")));
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let ip = st("addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type") == Some(&json!("InternalIP")))
        })
        .map(|x| s(x.get("address")))
        .unwrap_or_default();
    vec![
        name,
        json!(status),
        or_none(roles.join(",")),
        age,
        json!(s(st("nodeInfo").and_then(|i| i.get("kubeletVersion")))),
        or_none(ip),
    ]
}

fn service_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let ports: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{}:{}/{}", n(p.get("port")), np, proto),
                        None => format!("{}/{}", n(p.get("port")), proto),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        name,
        json!(s(obj.pointer("/spec/type"))),
        or_none(s(obj.pointer("/spec/clusterIP"))),
        json!("<none>"),
        or_none(ports.join(",")),
        age,
    ]
}

fn event_cells(obj: &Value, name: Value) -> Vec<Value> {
    let last = [
        obj.get("lastTimestamp"),
        obj.get("eventTime"),
        obj.pointer("/series/lastObservedTime"),
        obj.pointer("/metadata/creationTimestamp"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)
    .map(human_age)
    .unwrap_or_default();
    let io = obj.get("involvedObject").cloned().unwrap_or(json!({}));
    let object = format!("{}/{}", s(io.get("kind")).to_lowercase(), s(io.get("name")));
    vec![
        json!(last),
        json!(s(obj.get("type"))),
        json!(s(obj.get("reason"))),
        json!(object),
        json!(s(obj.get("message"))),
        name,
    ]
}

/// Column definitions.
pub fn columns(info: &ResourceInfo) -> Vec<Value> {
    if let Some(cols) = builtin_columns(info) {
        return cols
            .iter()
            .map(|(name, ty, prio)| {
                col(
                    name,
                    ty,
                    if *name == "Name" { "name" } else { "" },
                    "",
                    *prio,
                )
            })
            .collect();
    }
    let mut cols = vec![col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    if info.printer_columns.is_empty() {
        cols.push(col("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0));
    } else {
        for c in &info.printer_columns {
            let ty = if c.type_ == "date" {
                "string"
            } else {
                c.type_.as_str()
            };
            cols.push(col(&c.name, ty, &c.format, &c.description, c.priority));
        }
    }
    cols
}

fn eval_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        if let Some((field, idx)) = p.split_once('[') {
            cur = cur.get(field)?;
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        } else {
            cur = cur.get(p)?;
        }
    }
    Some(cur)
}

/// The object as a `meta.k8s.io/v1` PartialObjectMetadata (its metadata only), as
/// kube-apiserver answers a client that asks for `as=PartialObjectMetadata` (client-go's
/// metadata client, kube-rs's `*_metadata` calls) and as a Table row carries it.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// One row.
pub fn row(info: &ResourceInfo, obj: &Value) -> Value {
    if builtin_columns(info).is_some() {
        let partial = partial_metadata(obj);
        return json!({"cells": builtin_cells(info, obj), "object": partial});
    }
    let mut cells = vec![json!(meta_str(obj, "name").unwrap_or_default())];
    if info.printer_columns.is_empty() {
        cells.push(json!(human_age(
            meta_str(obj, "creationTimestamp").unwrap_or_default()
        )));
    } else {
        for c in &info.printer_columns {
            let v = eval_path(obj, &c.json_path).cloned().unwrap_or(Value::Null);
            let v = match (c.type_.as_str(), &v) {
                ("date", Value::String(s)) => json!(human_age(s)),
                (_, Value::Object(_) | Value::Array(_)) => json!(v.to_string()),
                _ => v,
            };
            cells.push(v);
        }
    }
    let partial = partial_metadata(obj);
    json!({"cells": cells, "object": partial})
}

/// A Table for a set of objects.
pub fn table(info: &ResourceInfo, objs: &[Arc<Value>], rv: &str, cont: &str) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(info, o)).collect();
    let mut meta = json!({"resourceVersion": rv});
    if !cont.is_empty() {
        meta["continue"] = json!(cont);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns(info), "rows": rows})
}
