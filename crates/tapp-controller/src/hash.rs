//! Template hashes and the semantic pod/template comparison used for adoption.
//!
//! The Go controller hashes a go-spew dump of the Go structs with FNV-1; that cannot be
//! reproduced from Rust (reference A.11.1). We hash a canonical JSON form (keys sorted, the two
//! hash labels removed) with FNV-1a 64 and write the value as `v2-<16 hex digits>`, so a hash
//! label written by the Go controller (a bare decimal number) is recognisable as foreign.
//! A pod with foreign (or missing) hash labels is compared *semantically* with its template on
//! first sight: when it matches, only the labels are restamped, without restarting the pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use addon_common::api::tapp::{TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL};
use addon_common::k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde_json::Value;

/// Prefix of every hash value this controller writes.
pub const HASH_PREFIX: &str = "v2-";

/// Pod annotation holding the hash of the template spec with container images *and* container
/// resources blanked: equal values mean only images and/or resources differ, so the pod can be
/// resized in place.
pub const RESIZE_HASH_ANNOTATION: &str = "apps.tkestack.io/resize-hash";

/// FNV-1a 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Writes `value` as JSON with object keys sorted, independent of serde_json's map feature.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            let mut first = true;
            for key in keys {
                let v = &map[key];
                if v.is_null() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hash_value(value: &Value) -> String {
    let mut text = String::new();
    canonical(value, &mut text);
    format!("{HASH_PREFIX}{:016x}", fnv1a64(text.as_bytes()))
}

fn template_value(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH_LABEL);
        labels.remove(UNIQ_HASH_LABEL);
        if labels.is_empty()
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    value
}

/// Blanks `field` in every container and init container of a pod spec value.
fn blank_container_field(spec: &mut Value, field: &str) {
    for list in ["containers", "initContainers"] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in items {
                if let Some(obj) = c.as_object_mut() {
                    obj.remove(field);
                }
            }
        }
    }
}

/// The three hashes of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateHashes {
    /// Whole template (metadata and spec) without the hash labels: `tapp_template_hash_key`.
    pub template: String,
    /// Spec with every (init)container image blanked: `tapp_uniq_hash_key`.
    pub uniq: String,
    /// Spec with images and resources blanked: [`RESIZE_HASH_ANNOTATION`].
    pub resize: String,
}

impl TemplateHashes {
    /// Computes the hashes of `template`.
    pub fn of(template: &PodTemplateSpec) -> Self {
        let value = template_value(template);
        let mut spec = value.get("spec").cloned().unwrap_or(Value::Null);
        blank_container_field(&mut spec, "image");
        let uniq = hash_value(&spec);
        blank_container_field(&mut spec, "resources");
        let resize = hash_value(&spec);
        Self {
            template: hash_value(&value),
            uniq,
            resize,
        }
    }
}

/// Template hashes remembered per TApp and generation. A TApp's templates cannot change
/// without its `metadata.generation` changing (the CRD has the status subresource), so the
/// hashes of a template name are computed once per generation instead of on every reconcile
/// (they were about 1.3% of the controller's CPU at 10,000 pods). Only the latest generation
/// of each TApp is kept; [`HashMemo::retain`] drops deleted TApps.
#[derive(Debug, Default)]
pub struct HashMemo {
    by_uid: Mutex<HashMap<String, MemoEntry>>,
}

#[derive(Debug)]
struct MemoEntry {
    generation: i64,
    by_name: HashMap<String, Arc<TemplateHashes>>,
}

impl HashMemo {
    /// The hashes of `template`, the template called `name` of the TApp `uid` at `generation`.
    /// Without a generation (an object no API server stored) they are computed every time.
    pub fn hashes(
        &self,
        uid: &str,
        generation: Option<i64>,
        name: &str,
        template: &PodTemplateSpec,
    ) -> Arc<TemplateHashes> {
        let Some(generation) = generation else {
            return Arc::new(TemplateHashes::of(template));
        };
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        // A hit looks up borrowed names; keys are allocated only on a miss.
        if let Some(h) = by_uid
            .get(uid)
            .filter(|e| e.generation == generation)
            .and_then(|e| e.by_name.get(name))
        {
            return h.clone();
        }
        let h = Arc::new(TemplateHashes::of(template));
        let entry = by_uid.entry(uid.to_string()).or_insert_with(|| MemoEntry {
            generation,
            by_name: HashMap::new(),
        });
        if entry.generation != generation {
            entry.generation = generation;
            entry.by_name.clear();
        }
        entry.by_name.insert(name.to_string(), h.clone());
        h
    }

    /// Keeps only the TApps whose uid `live` accepts.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live(uid));
    }

    /// Number of TApps remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_uid.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether a pod's hash labels were written by this implementation.
pub fn has_own_hashes(pod: &impl crate::pods::PodView) -> bool {
    own_hashes(|key| pod.label(key))
}

/// Whether both hash labels of a label set were written by this implementation.
pub fn labels_have_own_hashes(labels: Option<&BTreeMap<String, String>>) -> bool {
    own_hashes(|key| labels?.get(key).map(String::as_str))
}

/// The rule of both: each hash label is present and carries our prefix.
fn own_hashes<'a>(label: impl Fn(&str) -> Option<&'a str>) -> bool {
    [TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL]
        .into_iter()
        .all(|key| label(key).is_some_and(|v| v.starts_with(HASH_PREFIX)))
}

/// How a live pod differs from the pod its template would produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// Semantically equal: only labels need restamping.
    None,
    /// Only metadata (labels/annotations) differ.
    Metadata,
    /// Only container images (and maybe metadata) differ.
    Images,
    /// Only container images and/or resources (and maybe metadata) differ.
    Resources,
    /// Anything else: the pod must be recreated.
    Other,
}

/// Compares `expected` (the pod the controller would create) with the `live` pod, ignoring
/// everything the API server, admission plugins and the kubelet add (defaulted fields, extra
/// volumes and tolerations, status) — `expected` must be contained in `live`.
pub fn compare(expected: &Pod, live: &Pod) -> Difference {
    let mut e = serde_json::to_value(&expected.spec).unwrap_or(Value::Null);
    // readinessGates are immutable; pods of old Go versions lack ours and must not be recreated
    // for that alone.
    if let Some(obj) = e.as_object_mut() {
        obj.remove("readinessGates");
    }
    let l = serde_json::to_value(&live.spec).unwrap_or(Value::Null);
    let meta_ok = map_contained(
        expected.metadata.labels.as_ref(),
        live.metadata.labels.as_ref(),
    ) && map_contained(
        expected.metadata.annotations.as_ref(),
        live.metadata.annotations.as_ref(),
    );
    if contained(&e, &l) {
        return if meta_ok {
            Difference::None
        } else {
            Difference::Metadata
        };
    }
    let (mut e, mut l) = (e, l);
    blank_container_field(&mut e, "image");
    blank_container_field(&mut l, "image");
    if contained(&e, &l) {
        return Difference::Images;
    }
    blank_container_field(&mut e, "resources");
    blank_container_field(&mut l, "resources");
    if contained(&e, &l) {
        return Difference::Resources;
    }
    Difference::Other
}

fn map_contained(
    expected: Option<&BTreeMap<String, String>>,
    live: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    expected.iter().all(|(k, v)| {
        (k == TEMPLATE_HASH_LABEL || k == UNIQ_HASH_LABEL) || live.and_then(|l| l.get(k)) == Some(v)
    })
}

/// `expected` ⊆ `live`: objects by key, lists of scalars exactly, lists of objects element by
/// element (by `name` when the elements have one, else any unused matching element), strings
/// that are both Kubernetes quantities by value.
pub fn contained(expected: &Value, live: &Value) -> bool {
    match (expected, live) {
        (Value::Null, _) => true,
        (Value::Object(e), Value::Object(l)) => e.iter().all(|(k, ev)| match l.get(k) {
            Some(lv) => contained(ev, lv),
            None => is_empty(ev),
        }),
        (Value::Object(e), Value::Null) => e.values().all(is_empty),
        (Value::Array(e), Value::Array(l)) => {
            if e.iter().all(|v| !v.is_object()) {
                return e == l;
            }
            let mut used = vec![false; l.len()];
            for ev in e {
                let name = ev.get("name");
                let found = l.iter().enumerate().position(|(i, lv)| {
                    !used[i]
                        && match name {
                            Some(n) => lv.get("name") == Some(n) && contained(ev, lv),
                            None => contained(ev, lv),
                        }
                });
                match found {
                    Some(i) => used[i] = true,
                    None => return false,
                }
            }
            // Containers must match one to one: an injected extra container is a difference
            // only when it has the same name (handled above); extra ones are tolerated.
            true
        }
        (Value::Array(e), Value::Null) => e.is_empty(),
        (Value::String(e), Value::String(l)) => {
            e == l
                || matches!((parse_quantity(e), parse_quantity(l)), (Some(a), Some(b)) if (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0))
        }
        (Value::Number(e), Value::Number(l)) => e.as_f64() == l.as_f64(),
        (Value::Bool(false), Value::Null) => true,
        (e, l) => e == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    }
}

/// Parses a Kubernetes quantity (`500m`, `0.5`, `1Gi`, `1e3`, `128974848`) into its value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let number: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).expect("template")
    }

    #[test]
    fn memo_recomputes_on_a_new_generation_and_forgets_deleted_tapps() {
        let v1 = template(json!({"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}));
        let v2 = template(json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}));
        let memo = HashMemo::default();
        let first = memo.hashes("u1", Some(1), "", &v1);
        assert_eq!(*first, TemplateHashes::of(&v1));
        // Same generation and name: the remembered value (the template cannot differ).
        assert!(Arc::ptr_eq(&first, &memo.hashes("u1", Some(1), "", &v1)));
        // Another name, TApp or generation is computed from its own template.
        assert_eq!(
            *memo.hashes("u1", Some(1), "pool", &v2),
            TemplateHashes::of(&v2)
        );
        assert_eq!(
            *memo.hashes("u2", Some(1), "", &v2),
            TemplateHashes::of(&v2)
        );
        assert_eq!(
            *memo.hashes("u1", Some(2), "", &v2),
            TemplateHashes::of(&v2)
        );
        assert_eq!(
            *memo.hashes("u1", Some(2), "pool", &v1),
            TemplateHashes::of(&v1)
        );
        // Without a generation nothing is remembered.
        assert_eq!(*memo.hashes("u3", None, "", &v1), TemplateHashes::of(&v1));
        assert_eq!(memo.len(), 2);
        memo.retain(|uid| uid == "u2");
        assert_eq!(memo.len(), 1);
        assert_eq!(
            *memo.hashes("u2", Some(1), "", &v1),
            TemplateHashes::of(&v2)
        );
    }

    #[test]
    fn hashes_are_stable_prefixed_and_ignore_hash_labels_and_key_order() {
        let a = template(json!({"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}));
        let b = template(
            json!({"spec": {"containers": [{"image": "nginx:1", "name": "c"}]},
            "metadata": {"labels": {"app": "x", "tapp_template_hash_key": "123", "tapp_uniq_hash_key": "456"}}}),
        );
        let (ha, hb) = (TemplateHashes::of(&a), TemplateHashes::of(&b));
        assert_eq!(ha, hb);
        assert!(ha.template.starts_with(HASH_PREFIX));
        assert_eq!(ha.template.len(), HASH_PREFIX.len() + 16);
        // A known value pins the algorithm: changing it would restamp every pod.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn image_changes_keep_uniq_hash_incl_init_containers() {
        let a = template(
            json!({"spec": {"initContainers": [{"name": "i", "image": "busybox:1"}],
            "containers": [{"name": "c", "image": "nginx:1"}]}}),
        );
        let b = template(
            json!({"spec": {"initContainers": [{"name": "i", "image": "busybox:2"}],
            "containers": [{"name": "c", "image": "nginx:2"}]}}),
        );
        let c = template(
            json!({"spec": {"initContainers": [{"name": "i", "image": "busybox:2"}],
            "containers": [{"name": "c", "image": "nginx:2", "resources": {"limits": {"cpu": "1"}}}]}}),
        );
        let d = template(
            json!({"spec": {"containers": [{"name": "c", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]}]}}),
        );
        let (ha, hb, hc, hd) = (
            TemplateHashes::of(&a),
            TemplateHashes::of(&b),
            TemplateHashes::of(&c),
            TemplateHashes::of(&d),
        );
        assert_ne!(ha.template, hb.template);
        assert_eq!(ha.uniq, hb.uniq);
        assert_ne!(hb.uniq, hc.uniq);
        assert_eq!(hb.resize, hc.resize);
        assert_ne!(hc.resize, hd.resize);
        // Metadata-only changes keep both spec hashes.
        let e = template(
            json!({"metadata": {"labels": {"v": "2"}}, "spec": {"initContainers": [{"name": "i", "image": "busybox:1"}],
            "containers": [{"name": "c", "image": "nginx:1"}]}}),
        );
        let he = TemplateHashes::of(&e);
        assert_ne!(he.template, ha.template);
        assert_eq!(he.uniq, ha.uniq);
    }

    #[test]
    fn foreign_hash_labels_are_recognised() {
        let mut pod = Pod::default();
        assert!(!has_own_hashes(&pod));
        pod.metadata.labels = Some(BTreeMap::from([
            (
                TEMPLATE_HASH_LABEL.to_string(),
                "17685766981161034909".to_string(),
            ),
            (
                UNIQ_HASH_LABEL.to_string(),
                "3226707109688322824".to_string(),
            ),
        ]));
        assert!(!has_own_hashes(&pod));
        pod.metadata.labels = Some(BTreeMap::from([
            (
                TEMPLATE_HASH_LABEL.to_string(),
                "v2-0011223344556677".to_string(),
            ),
            (
                UNIQ_HASH_LABEL.to_string(),
                "v2-0011223344556678".to_string(),
            ),
        ]));
        assert!(has_own_hashes(&pod));
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn semantic_comparison_ignores_server_side_additions() {
        let expected = pod(
            json!({"metadata": {"labels": {"app": "x", "tapp_instance_key": "0"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1", "resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}}],
                     "readinessGates": [{"conditionType": "tkestack.io/InPlaceUpdate"}]}}),
        );
        let live = pod(
            json!({"metadata": {"labels": {"app": "x", "tapp_instance_key": "0", "tapp_template_hash_key": "1", "pod-template-hash": "z"},
                                           "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1", "imagePullPolicy": "IfNotPresent",
                        "resources": {"limits": {"cpu": "500m", "memory": "1073741824"}},
                        "volumeMounts": [{"name": "kube-api-access-abc", "mountPath": "/var/run/secrets"}]}],
                     "readinessGates": [{"conditionType": "tkestack.io/InPlaceUpdate"}],
                     "nodeName": "n1", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                     "volumes": [{"name": "kube-api-access-abc", "projected": {"sources": []}}],
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}}),
        );
        assert_eq!(compare(&expected, &live), Difference::None);

        let mut newer = expected.clone();
        if let Some(spec) = newer.spec.as_mut() {
            spec.containers[0].image = Some("nginx:2".into());
        }
        assert_eq!(compare(&newer, &live), Difference::Images);
        let mut bigger = newer.clone();
        if let Some(spec) = bigger.spec.as_mut() {
            spec.containers[0].resources =
                serde_json::from_value(json!({"limits": {"cpu": "2"}})).ok();
        }
        assert_eq!(compare(&bigger, &live), Difference::Resources);
        let mut env = expected.clone();
        if let Some(spec) = env.spec.as_mut() {
            spec.containers[0].env =
                serde_json::from_value(json!([{"name": "A", "value": "1"}])).ok();
        }
        assert_eq!(compare(&env, &live), Difference::Other);
        let mut relabeled = expected.clone();
        relabeled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("version".into(), "2".into());
        assert_eq!(compare(&relabeled, &live), Difference::Metadata);
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("0.5", "500m"),
            ("1Gi", "1073741824"),
            ("1k", "1000"),
            ("1e3", "1k"),
        ] {
            assert!(contained(&json!(a), &json!(b)), "{a} vs {b}");
        }
        assert!(!contained(&json!("1"), &json!("2")));
        assert!(!contained(&json!("nginx"), &json!("nginx:1")));
    }
}
