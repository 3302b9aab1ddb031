//! Structural-schema processing: defaulting, pruning of unknown fields (reporting them for
//! `fieldValidation`), and OpenAPI v3 validation with kube-apiserver style field errors.

use serde_json::{Map, Value};

use crate::errors::Cause;

/// What to do while walking.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Check types / constraints (CRDs); built-ins are only pruned.
    pub validate: bool,
    /// Apply `default`s.
    pub defaults: bool,
    /// Objects without `properties`/`additionalProperties` keep their content (built-in schemas
    /// use bare `type: object` for free-form data).
    pub lenient_objects: bool,
}

/// Walk result.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Validation errors.
    pub causes: Vec<Cause>,
    /// Paths of fields that were pruned as unknown.
    pub unknown: Vec<String>,
    /// Values with `x-kubernetes-validations` rules, evaluated afterwards.
    pub cel: Vec<crate::cel::CelCheck>,
}

/// Schema walker with a `$ref` resolver.
pub struct Walker<'a> {
    /// `components.schemas` definitions for `$ref` resolution.
    pub defs: &'a Map<String, Value>,
    /// Mode.
    pub mode: Mode,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

impl Walker<'_> {
    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..16 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                // single allOf wrapping a $ref
                if let Some([only]) = schema
                    .get("allOf")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    && schema.get("properties").is_none()
                    && only.get("$ref").is_some()
                {
                    schema = only;
                    continue;
                }
                return schema;
            };
            let name = r.rsplit('/').next().unwrap_or_default();
            match self.defs.get(name) {
                Some(s) => schema = s,
                None => return schema,
            }
        }
        schema
    }

    /// Process `v` at the root of a CRD object: apiVersion/kind/metadata are always allowed.
    pub fn walk_root(
        &self,
        schema: &Value,
        v: &mut Value,
        meta_schema: Option<&Value>,
        out: &mut Outcome,
    ) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        if let (Some(meta), Some(ms)) = (obj.get_mut("metadata"), meta_schema) {
            let m = Walker {
                defs: self.defs,
                mode: Mode {
                    validate: false,
                    defaults: false,
                    lenient_objects: true,
                },
            };
            m.walk(ms, meta, "metadata", out);
        }
        let meta = obj.remove("metadata");
        let api = obj.remove("apiVersion");
        let kind = obj.remove("kind");
        self.walk(schema, v, "", out);
        if let Some(obj) = v.as_object_mut() {
            if let Some(m) = meta {
                obj.insert("metadata".into(), m);
            }
            if let Some(a) = api {
                obj.insert("apiVersion".into(), a);
            }
            if let Some(k) = kind {
                obj.insert("kind".into(), k);
            }
        }
    }

    /// Process a value against a schema.
    pub fn walk(&self, schema: &Value, v: &mut Value, path: &str, out: &mut Outcome) {
        let schema = self.resolve(schema);
        let validate = self.mode.validate;
        let nullable = schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if v.is_null() {
            if validate && !nullable && schema.get("type").is_some() && !path.is_empty() {
                let t = schema
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: \"null\": {path} in body must be of type {t}: \"null\""
                    ),
                ));
            }
            return;
        }
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let embedded = schema
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ty = schema.get("type").and_then(Value::as_str);

        if validate {
            let type_ok = if int_or_string {
                is_integer(v) || v.is_string()
            } else {
                match ty {
                    Some("object") => v.is_object(),
                    Some("array") => v.is_array(),
                    Some("string") => v.is_string(),
                    Some("integer") => is_integer(v),
                    Some("number") => v.is_number(),
                    Some("boolean") => v.is_boolean(),
                    _ => true,
                }
            };
            if !type_ok {
                let got = type_name(v);
                let t = if int_or_string {
                    "integer,string"
                } else {
                    ty.unwrap_or_default()
                };
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: \"{got}\": {path} in body must be of type {t}: \"{got}\""
                    ),
                ));
                return;
            }
            self.check_scalar(schema, v, path, out);
        }

        match v {
            Value::Object(map) => self.walk_object(schema, map, path, embedded, preserve, out),
            Value::Array(items) => self.walk_array(schema, items, path, out),
            _ => {}
        }
        if validate
            && let Some(rules) = schema
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
        {
            out.cel.push(crate::cel::CelCheck {
                path: path.to_string(),
                value: v.clone(),
                rules: rules.clone(),
            });
        }
    }

    /// The object step of [`Self::walk`]: defaults, pruning, recursion into fields, object constraints.
    fn walk_object(
        &self,
        schema: &Value,
        map: &mut Map<String, Value>,
        path: &str,
        embedded: bool,
        preserve: bool,
        out: &mut Outcome,
    ) {
        let validate = self.mode.validate;
        let props = schema.get("properties").and_then(Value::as_object);
        let addl = schema.get("additionalProperties");
        if self.mode.defaults
            && let Some(props) = props
        {
            for (k, sub) in props {
                let sub = self.resolve(sub);
                if !map.contains_key(k)
                    && let Some(d) = sub.get("default")
                {
                    map.insert(k.clone(), d.clone());
                }
            }
        }
        if embedded {
            // apiVersion/kind/metadata of embedded objects are kept as-is
        }
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            let child_path = join(path, &k);
            if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let sub = props.and_then(|p| p.get(&k)).or(match addl {
                Some(Value::Object(_)) => addl,
                _ => None,
            });
            match sub {
                Some(sub) => {
                    let sub_resolved = self.resolve(sub);
                    let sub_nullable = sub_resolved
                        .get("nullable")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if map.get(&k).is_some_and(Value::is_null)
                        && !sub_nullable
                        && self.mode.validate
                    {
                        // kube-apiserver prunes nulls of non-nullable fields
                        map.remove(&k);
                        continue;
                    }
                    if let Some(child) = map.get_mut(&k) {
                        self.walk(sub, child, &child_path, out);
                    }
                }
                None => {
                    let keep = preserve
                        || matches!(addl, Some(Value::Bool(true)))
                        || (self.mode.lenient_objects && props.is_none() && addl.is_none());
                    if !keep {
                        out.unknown.push(child_path);
                        map.remove(&k);
                    }
                }
            }
        }
        if validate {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.causes.push(Cause::new(
                            "FieldValueRequired",
                            &join(path, r),
                            "Required value",
                        ));
                    }
                }
            }
            if embedded {
                for r in ["apiVersion", "kind"] {
                    if !map.contains_key(r) {
                        out.causes.push(Cause::new(
                            "FieldValueRequired",
                            &join(path, r),
                            "Required value",
                        ));
                    }
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                out.causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {} items", map.len(), max),
                ));
            }
        }
    }

    /// The array step of [`Self::walk`]: recursion into items, then item-count and list-type constraints.
    fn walk_array(&self, schema: &Value, items: &mut [Value], path: &str, out: &mut Outcome) {
        let validate = self.mode.validate;
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter_mut().enumerate() {
                self.walk(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        if validate {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {} items", items.len(), max),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should have at least {min} items",
                        items.len()
                    ),
                ));
            }
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            if list_type == Some("set") {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        out.causes.push(Cause::new(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!("Duplicate value: {}", show(a)),
                        ));
                    }
                }
            }
            if list_type == Some("map")
                && let Some(keys) = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
            {
                let key_of = |it: &Value| -> Vec<Value> {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(|k| it.get(k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for i in 0..items.len() {
                    let ki = key_of(&items[i]);
                    if items[..i].iter().any(|p| key_of(p) == ki) {
                        let shown: Vec<String> = keys
                            .iter()
                            .filter_map(Value::as_str)
                            .zip(ki.iter())
                            .map(|(k, v)| format!("\"{k}\":{v}"))
                            .collect();
                        out.causes.push(Cause::new(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!(
                                "Duplicate value: map[string]interface {{}}{{{}}}",
                                shown.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }

    fn check_scalar(&self, schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
        if let Some(en) = schema.get("enum").and_then(Value::as_array)
            && !en.contains(v)
        {
            let supported: Vec<String> = en.iter().map(show).collect();
            out.causes.push(Cause::new(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    supported.join(", ")
                ),
            ));
        }
        if let Some(n) = v.as_f64() {
            let excl_min = schema
                .get("exclusiveMinimum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let excl_max = schema
                .get("exclusiveMaximum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && (n < min || (excl_min && n == min))
            {
                let rel = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be {rel} {}",
                        show(v),
                        num(min)
                    ),
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && (n > max || (excl_max && n == max))
            {
                let rel = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be {rel} {}",
                        show(v),
                        num(max)
                    ),
                ));
            }
            if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64)
                && m != 0.0
                && (n / m).fract() != 0.0
            {
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be a multiple of {}",
                        show(v),
                        num(m)
                    ),
                ));
            }
        }
        if let Some(s) = v.as_str() {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.causes.push(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be at least {min} chars long",
                        show(v)
                    ),
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(p)
                && !re.is_match(s)
            {
                out.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should match '{p}'",
                        show(v)
                    ),
                ));
            }
        }
    }
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_and_prunes() {
        let defs = Map::new();
        let w = Walker {
            defs: &defs,
            mode: Mode {
                validate: true,
                defaults: true,
                lenient_objects: false,
            },
        };
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
            "size": {"type": "string", "enum": ["S", "M"]},
            "mode": {"type": "string", "default": "auto"},
            "port": {"x-kubernetes-int-or-string": true},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }}}});
        let mut v = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"replicas": 11, "colour": "red", "port": "http", "free": {"a": 1}}});
        let mut out = Outcome::default();
        w.walk_root(&schema, &mut v, None, &mut out);
        assert_eq!(out.unknown, vec!["spec.colour".to_string()]);
        let fields: Vec<&str> = out.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.replicas", "spec.size"]);
        assert_eq!(v["spec"]["mode"], "auto");
        assert_eq!(v["spec"]["free"]["a"], 1);
        assert_eq!(v["metadata"]["name"], "a");
    }
}
