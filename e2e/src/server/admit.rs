//! What every write goes through: type checks, schema pruning/defaulting/validation, metadata
//! validation, admission hooks, and injected write faults.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Api;
use super::route::Ctx;
use crate::admission::{AdmissionHook, AdmissionRequest, Operation};
use crate::errors::{ApiError, ApiResult, Cause};
use crate::openapi;
use crate::store::{meta_mut, meta_str};
use crate::validation::{Mode, Outcome, Walker};

impl Api {
    /// Check apiVersion/kind of a body, filling them when missing.
    pub(super) fn check_type(&self, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let av = self.info.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(av),
            Some(a) if a == av => {}
            Some(a) => {
                // other served versions of the same CRD are accepted (no conversion: same schema assumed)
                let same_group =
                    self.info.crd && a.split('/').next() == Some(self.info.group.as_str());
                if !same_group {
                    return Err(ApiError::bad_request(format!(
                        "the API version in the data ({a}) does not match the expected API version ({av})"
                    )));
                }
                obj["apiVersion"] = json!(av);
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(self.info.kind),
            Some(k) if k == self.info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.info.kind
                )));
            }
        }
        let ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
        if self.info.namespaced {
            if ns.is_empty() {
                meta_mut(obj).insert("namespace".into(), json!(self.ns));
            } else if ns != self.ns && !self.ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        } else {
            meta_mut(obj).remove("namespace");
        }
        Ok(())
    }

    /// Prune/default/validate against the schema; handles fieldValidation.
    pub(super) fn schema_process(
        &self,
        ctx: &mut Ctx,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let Some(schema) = self.info.schema.clone() else {
            return Ok(());
        };
        let defs = openapi::definitions();
        let mut out = Outcome::default();
        if self.info.crd {
            let w = Walker {
                defs,
                mode: Mode {
                    validate: true,
                    defaults: true,
                    lenient_objects: false,
                },
            };
            let meta_schema =
                json!({"$ref": format!("#/components/schemas/{}", openapi::OBJECT_META)});
            w.walk_root(&schema, obj, Some(&meta_schema), &mut out);
        } else {
            let w = Walker {
                defs,
                mode: Mode {
                    validate: false,
                    defaults: false,
                    lenient_objects: true,
                },
            };
            w.walk(&schema, obj, "", &mut out);
        }
        let fv = ctx.q("fieldValidation").unwrap_or("Warn").to_string();
        if !out.unknown.is_empty() {
            match fv.as_str() {
                "Strict" => {
                    let list: Vec<String> = out
                        .unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                "Ignore" => {}
                _ => {
                    for u in &out.unknown {
                        ctx.warnings.push(format!("unknown field \"{u}\""));
                    }
                }
            }
        }
        if out.causes.is_empty() && !out.cel.is_empty() {
            out.causes = crate::cel::evaluate(&out.cel, old);
        }
        if !out.causes.is_empty() {
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            return Err(self.info.invalid(&name, out.causes));
        }
        Ok(())
    }

    pub(super) fn validate_meta(&self, obj: &Value) -> ApiResult<()> {
        let name = meta_str(obj, "name").unwrap_or_default();
        let mut causes = vec![];
        let re_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !self.info.strategy.lenient_names() && !re_ok(name) {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            ));
        }
        if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
            for (k, v) in labels {
                let ok = v.as_str().is_some_and(|s| {
                    s.len() <= 63
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
                if !ok {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "metadata.labels",
                        format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                    ));
                } else if k.is_empty() {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "metadata.labels",
                        "Invalid value: \"\": name part must be non-empty",
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return Err(self.info.invalid(name, causes));
        }
        Ok(())
    }

    /// The registered admission hooks, in registration order.
    fn hooks(&self) -> Vec<Arc<dyn AdmissionHook>> {
        self.shared
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) async fn run_hooks(&self, req: &mut AdmissionRequest) -> ApiResult<()> {
        for h in &self.hooks() {
            h.mutate(req).await?;
        }
        Ok(())
    }

    pub(super) async fn run_validating_hooks(&self, req: &AdmissionRequest) -> ApiResult<()> {
        for h in &self.hooks() {
            h.validate(req).await?;
        }
        Ok(())
    }

    pub(super) fn admission_request(
        &self,
        op: Operation,
        sub: Option<&str>,
        ctx: &Ctx,
        name: &str,
        obj: Option<Value>,
        old: Option<Value>,
    ) -> AdmissionRequest {
        AdmissionRequest {
            operation: op,
            resource: self.info.clone(),
            subresource: sub.map(String::from),
            namespace: if self.info.namespaced {
                self.ns.clone()
            } else {
                String::new()
            },
            name: name.to_string(),
            object: obj,
            old_object: old,
            dry_run: ctx.dry_run(),
            user: ctx.user.clone(),
        }
    }

    pub(super) fn fault(&self, name: &str) -> ApiResult<()> {
        match self.shared.faults.take_write_fault(&self.gr(), name) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
