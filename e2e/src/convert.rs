//! Conversion between `events.k8s.io/v1` Events and the core/v1 Events they are stored as
//! (kube-apiserver stores both in the same place, so `kubectl describe` shows events recorded
//! through either API).

use serde_json::{Map, Value};

const PAIRS: &[(&str, &str)] = &[
    // (events.k8s.io/v1, core/v1)
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn remap(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    if let Some(meta) = m.get("metadata") {
        out.insert("metadata".into(), meta.clone());
    }
    for (new, core) in PAIRS {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(v) = m.get(*from) {
            out.insert((*to).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// events.k8s.io/v1 → core/v1 (storage form).
pub fn event_to_core(obj: &Value) -> Value {
    remap(obj, "v1", true)
}

/// core/v1 (storage form) → events.k8s.io/v1.
pub fn event_from_core(obj: &Value) -> Value {
    remap(obj, "events.k8s.io/v1", false)
}
