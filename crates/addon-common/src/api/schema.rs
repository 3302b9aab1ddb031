//! Schema and serde helpers shared by the API types.
//!
//! The CRDs embed real Kubernetes types (pod templates, PVCs, label selectors, conditions) so
//! that the API server validates them, but the upstream descriptions of those types make a TApp
//! CRD about 680 KB of JSON, far above the 256 KiB that client-side `kubectl apply` can store in
//! its last-applied annotation. [`embedded`] keeps the structure and validation of an embedded
//! type and drops its descriptions; the description of *our* field that embeds it is kept (it is
//! added by the derive from the field's doc comment, after `schema_with` runs).
//!
//! Conventions of the API modules:
//! - enums carry `#[schemars(description = "")]`: kube's `OptionalEnum` transform hoists the
//!   enum's own schema over an `Option<Enum>` field and would replace the field's description
//!   with the enum's; the field doc comments list the allowed values instead;
//! - doc comments are wrapped at 100 columns; [`normalize_descriptions`] joins the soft line
//!   breaks so `kubectl explain` re-flows them (applied by [`super::all_crds`]).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Schema keywords whose value is a single subschema.
const SINGLE_SUBSCHEMA_KEYWORDS: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "additionalItems",
    "contains",
    "propertyNames",
];
/// Schema keywords whose value is an array of subschemas.
const ARRAY_SUBSCHEMA_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Schema keywords whose value is a map of name -> subschema.
const MAP_SUBSCHEMA_KEYWORDS: &[&str] =
    &["properties", "patternProperties", "definitions", "$defs"];

/// `schema_with` helper for fields holding embedded Kubernetes types: the schema of `T` as the
/// generator would produce it (inlined by kube-derive's settings), with every `description`
/// removed recursively.
///
/// ```ignore
/// /// Pod template of the instances (our description survives).
/// #[schemars(schema_with = "crate::api::schema::embedded::<PodTemplateSpec>")]
/// pub template: PodTemplateSpec,
/// ```
pub fn embedded<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<T>();
    strip_descriptions(&mut schema);
    schema
}

/// Like [`embedded`] for a `Vec<Condition>`-shaped list keyed by `type`: adds
/// `x-kubernetes-list-type: map` and `x-kubernetes-list-map-keys: [type]` so server-side apply
/// merges conditions by type.
pub fn embedded_condition_list<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = embedded::<Vec<T>>(generator);
    condition_list_extensions(&mut schema);
    schema
}

/// Like [`embedded`] for the TApp/StatefulSet `volumeClaimTemplates` list: the claims are
/// matched by `metadata.name`, which is not a valid list-map key, so the list stays atomic.
pub fn embedded_atomic_list<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = embedded::<Vec<T>>(generator);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), Value::from("atomic"));
    }
    schema
}

/// Adds the list-map markers (keyed by `type`) to an array schema of conditions.
pub fn condition_list_extensions(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), Value::from("map"));
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            Value::Array(vec![Value::from("type")]),
        );
    }
}

/// Removes every `description` keyword from a schema and all of its subschemas. Property
/// *names* are never touched, so a property called `description` survives.
pub fn strip_descriptions(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        strip_object(obj);
    }
}

/// Same as [`strip_descriptions`] on a raw JSON value (e.g. a serialized `JSONSchemaProps`).
pub fn strip_descriptions_value(value: &mut Value) {
    if let Value::Object(obj) = value {
        strip_object(obj);
    }
}

fn strip_object(obj: &mut serde_json::Map<String, Value>) {
    obj.remove("description");
    for key in SINGLE_SUBSCHEMA_KEYWORDS {
        if let Some(sub) = obj.get_mut(*key) {
            strip_descriptions_value(sub);
        }
    }
    for key in ARRAY_SUBSCHEMA_KEYWORDS {
        if let Some(Value::Array(subs)) = obj.get_mut(*key) {
            subs.iter_mut().for_each(strip_descriptions_value);
        }
    }
    // `items` may also be an array of schemas (tuple validation).
    if let Some(Value::Array(subs)) = obj.get_mut("items") {
        subs.iter_mut().for_each(strip_descriptions_value);
    }
    for key in MAP_SUBSCHEMA_KEYWORDS {
        if let Some(Value::Object(map)) = obj.get_mut(*key) {
            map.values_mut().for_each(strip_descriptions_value);
        }
    }
}

/// Joins the soft line breaks of every `description` in a CRD's schemas (single newlines inside
/// a paragraph, as left by wrapped doc comments) into spaces; blank lines (paragraph breaks) and
/// lines starting a list item (`- `, `* `, `| `) are kept.
pub fn normalize_descriptions(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        normalize_props(schema);
    }
}

fn normalize_props(props: &mut JSONSchemaProps) {
    if let Some(description) = props.description.as_mut() {
        *description = join_soft_breaks(description);
    }
    for sub in props.properties.iter_mut().flat_map(|p| p.values_mut()) {
        normalize_props(sub);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = props.items.as_mut() {
        normalize_props(items);
    }
    if let Some(JSONSchemaPropsOrArray::Schemas(items)) = props.items.as_mut() {
        items.iter_mut().for_each(normalize_props);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(additional)) = props.additional_properties.as_mut() {
        normalize_props(additional);
    }
}

/// Joins lines of a paragraph with a space (see [`normalize_descriptions`]).
pub fn join_soft_breaks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_blank = true;
    for (i, line) in text.split('\n').enumerate() {
        let trimmed = line.trim();
        let list_item = ["- ", "* ", "| "].iter().any(|m| trimmed.starts_with(m));
        if i > 0 {
            if trimmed.is_empty() || previous_blank || list_item {
                out.push('\n');
            } else {
                out.push(' ');
            }
        }
        out.push_str(if trimmed.is_empty() {
            ""
        } else {
            line.trim_end()
        });
        previous_blank = trimmed.is_empty();
    }
    out
}

/// `deserialize_with` helper: accepts `null` (as written by the Go originals for nil slices,
/// maps and strings that are not `omitempty`) and maps it to `T::default()`.
pub fn null_to_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `skip_serializing_if` helper for Go `bool` fields tagged `omitempty`.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
pub fn is_false(value: &bool) -> bool {
    !*value
}

/// Regular expression (ECMA-262, as the API server evaluates `pattern`) of a Go
/// `time.ParseDuration` string: an optional sign and one or more decimal numbers, each with a
/// unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `15s`, `1m30s`, `1.5h`; or a bare `0`.
pub const GO_DURATION_PATTERN: &str =
    r"^([-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$|^[-+]?0$";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_keyword_not_property_names() {
        let mut schema: Schema = serde_json::from_value(json!({
            "description": "root",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "a property named description"},
                "list": {"type": "array", "items": {"type": "object", "description": "item",
                    "properties": {"x": {"type": "integer", "description": "x"}}}},
                "map": {"type": "object", "additionalProperties": {"type": "string", "description": "v"}},
                "either": {"anyOf": [{"type": "string", "description": "s"}]}
            }
        }))
        .expect("schema");
        strip_descriptions(&mut schema);
        let text = serde_json::to_string(&schema).expect("json");
        assert!(!text.contains("\"description\":\""), "{text}");
        assert!(
            schema
                .get("properties")
                .and_then(|p| p.get("description"))
                .is_some()
        );
    }

    #[test]
    fn soft_breaks_are_joined() {
        assert_eq!(join_soft_breaks("one\ntwo"), "one two");
        assert_eq!(join_soft_breaks("one\n\ntwo\nthree"), "one\n\ntwo three");
        assert_eq!(join_soft_breaks("list:\n- a\n- b"), "list:\n- a\n- b");
        assert_eq!(join_soft_breaks("single"), "single");
    }

    #[test]
    fn null_becomes_default() {
        #[derive(Deserialize)]
        struct S {
            #[serde(default, deserialize_with = "null_to_default")]
            v: Vec<String>,
        }
        let s: S = serde_json::from_value(json!({"v": null})).expect("null");
        assert!(s.v.is_empty());
        let s: S = serde_json::from_value(json!({})).expect("absent");
        assert!(s.v.is_empty());
        let s: S = serde_json::from_value(json!({"v": ["a"]})).expect("value");
        assert_eq!(s.v, vec!["a".to_string()]);
    }
}
