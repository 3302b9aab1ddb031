//! Validation of TApp specs (the admission webhook's decisions), on the raw JSON so every
//! message can name the offending field even when the object would not deserialize.

use std::collections::BTreeMap;

use addon_common::api::tapp::{
    DEFAULT_TEMPLATE_NAME, TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL, parse_instance_id,
};
use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::pods::{selector_matches, selector_string};

/// Validates a TApp object; returns one message per problem, each naming its field.
pub fn validate_tapp(obj: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(spec) = obj.get("spec").and_then(Value::as_object) else {
        return vec!["spec: Required value".into()];
    };
    match spec.get("replicas") {
        None | Some(Value::Null) => {}
        Some(v)
            if v.as_i64()
                .is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n)) => {}
        Some(v) => errors.push(format!(
            "spec.replicas: Invalid value: {v}: must be an integer >= 0"
        )),
    }
    let strategy = spec.get("updateStrategy");
    check_budget(
        strategy.and_then(|s| s.get("maxUnavailable")),
        "spec.updateStrategy.maxUnavailable",
        &mut errors,
    );
    check_budget(
        strategy
            .and_then(|s| s.get("forceUpdate"))
            .and_then(|f| f.get("maxUnavailable")),
        "spec.updateStrategy.forceUpdate.maxUnavailable",
        &mut errors,
    );
    if let Some(g) = strategy.and_then(|s| s.get("inPlaceUpdateGracePeriodSeconds"))
        && !g.is_null()
        && g.as_i64().is_none_or(|n| n < 0)
    {
        errors.push(format!("spec.updateStrategy.inPlaceUpdateGracePeriodSeconds: Invalid value: {g}: must be an integer >= 0"));
    }

    let pool: BTreeMap<String, Value> = spec
        .get("templatePool")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let known = |name: &str| name == DEFAULT_TEMPLATE_NAME || pool.contains_key(name);

    if let Some(templates) = spec.get("templates").and_then(Value::as_object) {
        for (id, name) in templates {
            if parse_instance_id(id).is_none() {
                errors.push(format!("spec.templates[{id}]: Invalid value: {id:?}: instance id must be a non-negative decimal integer"));
            }
            match name.as_str() {
                Some(n) if known(n) => {}
                Some(n) => errors.push(format!("spec.templates[{id}]: Not found: template {n:?} is neither \"default\" nor a key of spec.templatePool")),
                None => errors.push(format!("spec.templates[{id}]: Invalid value: {name}: must be a template name")),
            }
        }
    }
    if let Some(statuses) = spec.get("statuses").and_then(Value::as_object) {
        for (id, status) in statuses {
            if parse_instance_id(id).is_none() {
                errors.push(format!("spec.statuses[{id}]: Invalid value: {id:?}: instance id must be a non-negative decimal integer"));
            }
            if !matches!(status.as_str(), Some("Killed" | "Running")) {
                errors.push(format!("spec.statuses[{id}]: Unsupported value: {status}: supported values: \"Killed\", \"Running\""));
            }
        }
    }
    if let Some(name) = spec.get("defaultTemplateName").and_then(Value::as_str)
        && !name.is_empty()
        && !known(name)
    {
        errors.push(format!("spec.defaultTemplateName: Not found: template {name:?} is neither \"default\" nor a key of spec.templatePool"));
    }
    if let Some(name) = strategy
        .and_then(|s| s.get("template"))
        .and_then(Value::as_str)
        && !name.is_empty()
        && !known(name)
    {
        errors.push(format!("spec.updateStrategy.template: Not found: template {name:?} is neither \"default\" nor a key of spec.templatePool"));
    }

    // Selector vs template labels (the original loops forever on a mismatch).
    check_selector(spec, &pool, &mut errors);
    if let Some(claims) = spec.get("volumeClaimTemplates").and_then(Value::as_array) {
        for (i, c) in claims.iter().enumerate() {
            if c.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(format!(
                    "spec.volumeClaimTemplates[{i}].metadata.name: Required value"
                ));
            }
        }
    }
    errors
}

/// The selector (given, or defaulted from the template labels) and whether every template's
/// labels match it.
fn check_selector(
    spec: &serde_json::Map<String, Value>,
    pool: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    let labels_of = |t: Option<&Value>| -> BTreeMap<String, String> {
        t.and_then(|t| t.pointer("/metadata/labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default()
    };
    let template_labels = labels_of(spec.get("template"));
    let selector: Option<LabelSelector> = match spec.get("selector") {
        None | Some(Value::Null) => {
            let mut labels = template_labels.clone();
            labels.remove(TEMPLATE_HASH_LABEL);
            labels.remove(UNIQ_HASH_LABEL);
            if labels.is_empty() {
                errors.push("spec.template.metadata.labels: Required value: the selector defaults to the template labels, which are empty".into());
                None
            } else {
                Some(LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                })
            }
        }
        Some(v) => match serde_json::from_value::<LabelSelector>(v.clone()) {
            Ok(s)
                if s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && s.match_expressions.as_ref().is_none_or(Vec::is_empty) =>
            {
                errors.push(
                    "spec.selector: Invalid value: empty selector would select every pod".into(),
                );
                None
            }
            Ok(s) => {
                for e in s.match_expressions.iter().flatten() {
                    if !matches!(
                        e.operator.as_str(),
                        "In" | "NotIn" | "Exists" | "DoesNotExist"
                    ) {
                        errors.push(format!("spec.selector.matchExpressions: Unsupported value: {:?}: supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"", e.operator));
                    }
                }
                Some(s)
            }
            Err(e) => {
                errors.push(format!("spec.selector: Invalid value: {e}"));
                None
            }
        },
    };
    if let Some(sel) = selector {
        if spec.get("selector").is_some_and(|s| !s.is_null())
            && !selector_matches(&sel, &template_labels)
        {
            errors.push(format!("spec.template.metadata.labels: Invalid value: `selector` does not match template `labels` (selector {})", selector_string(&sel)));
        }
        for (name, template) in pool {
            if !selector_matches(&sel, &labels_of(Some(template))) {
                errors.push(format!("spec.templatePool[{name}].metadata.labels: Invalid value: `selector` does not match template `labels` (selector {})", selector_string(&sel)));
            }
        }
    }
}

/// maxUnavailable: an integer >= 1 or a percentage "1%".."100%".
fn check_budget(value: Option<&Value>, field: &str, errors: &mut Vec<String>) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            if !n.as_i64().is_some_and(|i| (1..=i64::from(i32::MAX)).contains(&i)) {
                errors.push(format!("{field}: Invalid value: {n}: must be an integer >= 1 or a percentage between 1% and 100%"));
            }
        }
        Some(Value::String(s)) => {
            let ok = s
                .strip_suffix('%')
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| (1..=100).contains(&p));
            if !ok {
                errors.push(format!("{field}: Invalid value: {s:?}: must be an integer >= 1 or a percentage between 1% and 100%"));
            }
        }
        Some(other) => errors.push(format!("{field}: Invalid value: {other}: must be an integer >= 1 or a percentage between 1% and 100%")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tapp(spec_extra: Value) -> Value {
        let mut spec = json!({"replicas": 3, "template": {"metadata": {"labels": {"app": "example-tapp"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.7.9"}]}},
            "templatePool": {"test": {"metadata": {"labels": {"app": "example-tapp"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}}}});
        json_patch::merge(&mut spec, &spec_extra);
        json!({"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "metadata": {"name": "example-tapp"}, "spec": spec})
    }

    #[test]
    fn seed_examples_are_valid() {
        for extra in [
            json!({}),
            json!({"templates": {"1": "test"}}),
            json!({"templates": {"0": "test", "1": "test", "2": "test"}, "updateStrategy": {"template": "test", "maxUnavailable": 1}}),
            json!({"templates": {"0": "test"}, "updateStrategy": {"template": "test", "maxUnavailable": 1}, "statuses": {"1": "Killed"}}),
            json!({"updateStrategy": {"maxUnavailable": "100%", "forceUpdate": {"maxUnavailable": "1%"}}}),
            json!({"selector": {"matchLabels": {"app": "example-tapp"}}, "statuses": {"0": "Running"}}),
        ] {
            assert_eq!(
                validate_tapp(&tapp(extra.clone())),
                Vec::<String>::new(),
                "{extra}"
            );
        }
    }

    #[test]
    fn every_invalid_spec_is_rejected_naming_its_field() {
        let table = [
            (
                json!({"updateStrategy": {"maxUnavailable": 0}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"maxUnavailable": -1}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"maxUnavailable": "0%"}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"maxUnavailable": "101%"}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"maxUnavailable": "abc"}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"maxUnavailable": "1"}}),
                "spec.updateStrategy.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"forceUpdate": {"maxUnavailable": "150%"}}}),
                "spec.updateStrategy.forceUpdate.maxUnavailable",
            ),
            (
                json!({"updateStrategy": {"forceUpdate": {"maxUnavailable": 0}}}),
                "spec.updateStrategy.forceUpdate.maxUnavailable",
            ),
            (json!({"templates": {"1": "missing"}}), "spec.templates[1]"),
            (json!({"templates": {"-1": "test"}}), "spec.templates[-1]"),
            (json!({"templates": {"a": "test"}}), "spec.templates[a]"),
            (json!({"statuses": {"x": "Killed"}}), "spec.statuses[x]"),
            (json!({"statuses": {"-2": "Killed"}}), "spec.statuses[-2]"),
            (json!({"statuses": {"1": "Pending"}}), "spec.statuses[1]"),
            (json!({"statuses": {"1": "killed"}}), "spec.statuses[1]"),
            (
                json!({"defaultTemplateName": "nope"}),
                "spec.defaultTemplateName",
            ),
            (
                json!({"updateStrategy": {"template": "nope"}}),
                "spec.updateStrategy.template",
            ),
            (
                json!({"selector": {"matchLabels": {"app": "other"}}}),
                "spec.template.metadata.labels",
            ),
            (
                json!({"templatePool": {"test": {"metadata": {"labels": {"app": "other"}}}}}),
                "spec.templatePool[test].metadata.labels",
            ),
            (
                json!({"template": {"metadata": {"labels": null}}}),
                "spec.template.metadata.labels",
            ),
            (json!({"replicas": -1}), "spec.replicas"),
            (
                json!({"updateStrategy": {"inPlaceUpdateGracePeriodSeconds": -5}}),
                "spec.updateStrategy.inPlaceUpdateGracePeriodSeconds",
            ),
            (
                json!({"volumeClaimTemplates": [{"spec": {}}]}),
                "spec.volumeClaimTemplates[0].metadata.name",
            ),
        ];
        for (extra, field) in table {
            let errors = validate_tapp(&tapp(extra.clone()));
            assert!(!errors.is_empty(), "{extra} must be rejected");
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{extra}: {errors:?} must name {field}"
            );
        }
    }
}
