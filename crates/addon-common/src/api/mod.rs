//! API types of every custom resource the add-ons serve, wire-compatible with the TKEStack originals.
//!
//! | kind | apiVersion | module |
//! |---|---|---|
//! | TApp | apps.tkestack.io/v1 | [`tapp`] |
//! | CronHPA | extensions.tkestack.io/v1 | [`cronhpa`] |
//! | LoadBalancerDriver, LoadBalancer, BackendGroup, BackendRecord | lbcf.tkestack.io/v1beta1 | [`lbcf`] |
//! | Bind | lbcf.tkestack.io/v1 | [`lbcf`] |
//! | FloatingIP (cluster-scoped), Pool | galaxy.k8s.io/v1alpha1 | [`galaxy`] |
//!
//! The CustomResourceDefinitions are generated from these types ([`all_crds`]); embedded
//! Kubernetes types keep their full structural schema but lose their descriptions (see
//! [`schema::embedded`]) so the TApp CRD stays small enough for client-side `kubectl apply`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;

pub mod cronhpa;
pub mod galaxy;
pub mod lbcf;
pub mod schema;
pub mod tapp;

pub use cronhpa::{CronHPA, CronHPASpec, CronHPAStatus};
pub use galaxy::{FloatingIP, FloatingIPSpec, Pool, PoolFields};
pub use lbcf::{
    BackendGroup, BackendGroupSpec, BackendRecord, BackendRecordSpec, Bind, BindSpec, LoadBalancer,
    LoadBalancerDriver, LoadBalancerDriverSpec, LoadBalancerSpec,
};
pub use tapp::{TApp, TAppSpec, TAppStatus};

/// Every CustomResourceDefinition served by the add-ons, in a stable order: TApp, CronHPA, the
/// LBCF kinds (LoadBalancerDriver, LoadBalancer, BackendGroup, BackendRecord, Bind), FloatingIP,
/// Pool.
///
/// Descriptions are normalized ([`schema::normalize_descriptions`]): use this rather than
/// `Kind::crd()` to produce manifests.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        TApp::crd(),
        CronHPA::crd(),
        LoadBalancerDriver::crd(),
        LoadBalancer::crd(),
        BackendGroup::crd(),
        BackendRecord::crd(),
        Bind::crd(),
        FloatingIP::crd(),
        Pool::crd(),
    ];
    crds.iter_mut().for_each(schema::normalize_descriptions);
    crds
}

/// Helpers shared by the tests of the API modules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Reads `tests/fixtures/<file>` (YAML copied verbatim from the seed docs) and returns it
    /// deserialized into `T` and as a raw JSON value.
    pub fn load_fixture<T: DeserializeOwned>(file: &str) -> (T, Value) {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", file]
            .iter()
            .collect();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let typed: T = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{file} does not deserialize: {e}"));
        let raw: Value = serde_yaml::from_str(&text).expect("fixture is YAML");
        (typed, raw)
    }

    /// Serializes `typed` and checks it equals `original`, except for the JSON pointers in
    /// `added` which may exist only in the serialized form (fields the type always writes, like
    /// the original's non-omitempty fields). Nothing of `original` may be lost or changed.
    pub fn roundtrip_exact<T: Serialize>(typed: &T, original: &Value, added: &[&str]) {
        let mut out = serde_json::to_value(typed).expect("serializes");
        for pointer in added {
            if original.pointer(pointer).is_none() {
                remove_pointer(&mut out, pointer);
            }
        }
        assert_eq!(
            &out,
            original,
            "round trip changed the object:\n got: {}\nwant: {}",
            serde_json::to_string_pretty(&out).unwrap_or_default(),
            serde_json::to_string_pretty(original).unwrap_or_default()
        );
    }

    fn remove_pointer(value: &mut Value, pointer: &str) {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return;
        };
        if let Some(Value::Object(map)) = value.pointer_mut(parent) {
            map.remove(last);
        }
    }

    /// The CRD as JSON, with its single version's openAPIV3Schema.
    pub fn crd_json(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(crd).expect("crd serializes")
    }

    /// The schema of the property at dotted `path` ("" = root, "spec.template.spec") of the
    /// first version of a CRD given as JSON. Panics if absent.
    pub fn schema_at<'a>(crd: &'a Value, path: &str) -> &'a Value {
        let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(node.is_object(), "CRD has no schema");
        for part in path.split('.').filter(|p| !p.is_empty()) {
            node = &node["properties"][part];
            assert!(node.is_object(), "no schema at {path} (missing {part})");
        }
        node
    }

    /// Checks the Kubernetes structural-schema rules that a generator can break: no `$ref`,
    /// `definitions`, `allOf`/`oneOf`/`anyOf`/`not` carrying types, every node has a `type`
    /// unless it is int-or-string or preserves unknown fields, no `additionalProperties`
    /// together with `properties`, and free-form data only where intended.
    pub fn assert_structural(crd: &Value) {
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        walk_structural(root, "");
        assert_eq!(root["type"], "object");
    }

    fn walk_structural(node: &Value, path: &str) {
        let Some(obj) = node.as_object() else {
            panic!("schema at {path:?} is not an object: {node}");
        };
        for forbidden in [
            "$ref",
            "definitions",
            "$defs",
            "$schema",
            "oneOf",
            "anyOf",
            "allOf",
            "not",
            "const",
        ] {
            assert!(!obj.contains_key(forbidden), "{forbidden} at {path:?}");
        }
        let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !int_or_string {
            assert!(
                obj.get("type").is_some_and(Value::is_string) || preserve,
                "schema at {path:?} has no single type: {node}"
            );
        }
        if let Some(t) = obj.get("type").and_then(Value::as_str) {
            assert!(
                ["object", "array", "string", "integer", "number", "boolean"].contains(&t),
                "bad type {t} at {path:?}"
            );
        }
        assert!(
            !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
            "properties and additionalProperties at {path:?}"
        );
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (name, sub) in props {
                walk_structural(sub, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = obj.get("items") {
            walk_structural(items, &format!("{path}[]"));
        }
        if let Some(additional) = obj.get("additionalProperties")
            && !additional.is_boolean()
        {
            walk_structural(additional, &format!("{path}{{}}"));
        }
    }

    /// Checks that every property of our own types has a non-empty description, skipping the
    /// subtrees at the dotted paths in `embedded` (embedded Kubernetes types whose descriptions
    /// are stripped on purpose; the embedding property itself must still be described).
    pub fn assert_described(crd: &Value, embedded: &[&str]) {
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(
            root["description"].as_str().is_some_and(|d| !d.is_empty()),
            "root schema has no description"
        );
        let mut missing = Vec::new();
        walk_described(root, "", embedded, &mut missing);
        assert!(
            missing.is_empty(),
            "properties without description: {missing:?}"
        );
    }

    fn walk_described(node: &Value, path: &str, embedded: &[&str], missing: &mut Vec<String>) {
        if let Some(Value::Object(props)) = node.get("properties") {
            for (name, sub) in props {
                let sub_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                if sub["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    missing.push(sub_path.clone());
                }
                if !embedded.contains(&sub_path.as_str()) {
                    walk_described(sub, &sub_path, embedded, missing);
                }
            }
        }
        if let Some(items) = node.get("items") {
            walk_described(items, path, embedded, missing);
        }
        if let Some(additional) = node.get("additionalProperties") {
            walk_described(additional, path, embedded, missing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_structural, crd_json};
    use super::*;

    /// Client-side `kubectl apply` stores the object in a 262,144-byte annotation; stay well
    /// below it.
    const MAX_CRD_JSON_BYTES: usize = 250_000;

    #[test]
    fn all_crds_in_stable_order() {
        let names: Vec<String> = all_crds()
            .into_iter()
            .map(|c| c.metadata.name.unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "tapps.apps.tkestack.io",
                "cronhpas.extensions.tkestack.io",
                "loadbalancerdrivers.lbcf.tkestack.io",
                "loadbalancers.lbcf.tkestack.io",
                "backendgroups.lbcf.tkestack.io",
                "backendrecords.lbcf.tkestack.io",
                "binds.lbcf.tkestack.io",
                "floatingips.galaxy.k8s.io",
                "pools.galaxy.k8s.io",
            ]
        );
        // Generation is deterministic.
        assert_eq!(all_crds(), all_crds());
        // Descriptions are re-flowed: no line break inside a paragraph.
        for crd in all_crds() {
            let json = serde_json::to_string(&crd).expect("json");
            let value: serde_json::Value = serde_json::from_str(&json).expect("value");
            let mut descriptions = Vec::new();
            collect_descriptions(&value, &mut descriptions);
            for d in descriptions {
                for (a, b) in d.split('\n').zip(d.split('\n').skip(1)) {
                    assert!(
                        a.is_empty() || b.is_empty() || b.trim_start().starts_with("- "),
                        "soft line break in {d:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn crds_are_small_structural_and_served() {
        for crd in all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let json = serde_json::to_string(&crd).expect("json");
            assert!(
                json.len() < MAX_CRD_JSON_BYTES,
                "{name} is {} bytes of JSON",
                json.len()
            );
            assert_eq!(crd.spec.versions.len(), 1, "{name}");
            let version = &crd.spec.versions[0];
            assert!(version.served && version.storage, "{name}");
            assert_structural(&crd_json(&crd));
            // The JSON must also be a valid JSONSchemaProps round trip (what the API server
            // receives).
            let back: CustomResourceDefinition = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, crd, "{name}");
        }
    }

    fn collect_descriptions(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("description", serde_json::Value::String(d)) => out.push(d.clone()),
                        _ => collect_descriptions(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|v| collect_descriptions(v, out));
            }
            _ => {}
        }
    }

    /// Prints the size of each CRD (`cargo test -p addon-common crd_sizes -- --nocapture`).
    #[test]
    fn crd_sizes() {
        for crd in all_crds() {
            let json = serde_json::to_string(&crd).expect("json");
            let yaml = serde_yaml::to_string(&crd).expect("yaml");
            println!(
                "{:40} {:>8} bytes JSON {:>8} bytes YAML",
                crd.metadata.name.unwrap_or_default(),
                json.len(),
                yaml.len()
            );
        }
    }
}
