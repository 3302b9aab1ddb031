//! `x-kubernetes-validations` (CEL) rules of CRD schemas, evaluated with the `cel` crate.
//!
//! Supported: `rule` over `self` (and `oldSelf` for transition rules, on updates of fields not
//! inside lists), `message`, `reason`, `fieldPath`. Rules that do not compile with the `cel`
//! crate or call functions it lacks (some Kubernetes CEL libraries: quantity, ip, url, lists
//! extensions) are skipped, i.e. not enforced. `messageExpression` is not evaluated.

use serde_json::Value;

use crate::errors::Cause;

/// A value that carried `x-kubernetes-validations`, collected during the schema walk.
#[derive(Clone, Debug)]
pub struct CelCheck {
    /// Field path of the value (`spec`, `spec.replicas`).
    pub path: String,
    /// The value (after defaulting and pruning).
    pub value: Value,
    /// The rules.
    pub rules: Vec<Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.contains('[') {
        return None;
    }
    let mut cur = root;
    for p in path.split('.').filter(|s| !s.is_empty()) {
        cur = cur.get(p)?;
    }
    Some(cur)
}

enum Outcome {
    Pass,
    Fail,
    Skip,
}

fn eval(rule: &str, value: &Value, old: Option<&Value>) -> Outcome {
    let Ok(program) = cel::Program::compile(rule) else {
        return Outcome::Skip;
    };
    let mut ctx = cel::Context::default();
    let Ok(v) = cel::to_value(value) else {
        return Outcome::Skip;
    };
    ctx.add_variable_from_value("self", v);
    if rule.contains("oldSelf") {
        let Some(old) = old else { return Outcome::Skip };
        let Ok(o) = cel::to_value(old) else {
            return Outcome::Skip;
        };
        ctx.add_variable_from_value("oldSelf", o);
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(true)) => Outcome::Pass,
        Ok(cel::Value::Bool(false)) => Outcome::Fail,
        Err(cel::ExecutionError::NoSuchKey(_)) => Outcome::Fail,
        _ => Outcome::Skip,
    }
}

/// Evaluate collected rules; `old` is the stored object on updates.
pub fn evaluate(checks: &[CelCheck], old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    for c in checks {
        let old_value = old.and_then(|o| lookup(o, &c.path));
        for r in &c.rules {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            if let Outcome::Fail = eval(rule, &c.value, old_value) {
                let message = r
                    .get("message")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("failed rule: {rule}"));
                let field = match r.get("fieldPath").and_then(Value::as_str) {
                    Some(fp) if c.path.is_empty() => fp.trim_start_matches('.').to_string(),
                    Some(fp) => format!("{}{}", c.path, fp),
                    None => c.path.clone(),
                };
                let reason = r
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("FieldValueInvalid");
                let msg = match reason {
                    "FieldValueRequired" => format!("Required value: {message}"),
                    "FieldValueForbidden" => format!("Forbidden: {message}"),
                    "FieldValueDuplicate" => format!("Duplicate value: {message}"),
                    _ => format!("Invalid value: \"{}\": {message}", type_name(&c.value)),
                };
                causes.push(Cause::new(reason, &field, msg));
            }
        }
    }
    causes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_pass_fail_and_transition() {
        let check = CelCheck {
            path: "spec".into(),
            value: json!({"min": 3, "max": 2, "name": "abc"}),
            rules: vec![
                json!({"rule": "self.min <= self.max", "message": "min must not exceed max"}),
                json!({"rule": "self.name.startsWith('a')"}),
                json!({"rule": "self.name == oldSelf.name", "message": "name is immutable"}),
            ],
        };
        let causes = evaluate(std::slice::from_ref(&check), None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"object\": min must not exceed max"
        );
        let old = json!({"spec": {"name": "zzz"}});
        let causes = evaluate(&[check], Some(&old));
        assert_eq!(causes.len(), 2, "{causes:?}");
    }
}
