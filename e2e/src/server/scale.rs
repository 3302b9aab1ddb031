//! The `scale` subresource: reading and writing replicas through the resource's scale paths.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::route::{Ctx, json_response};
use crate::errors::{ApiError, ApiResult, Cause};
use crate::patch::{self, PatchType};
use crate::selectors::LabelSelector;
use crate::store::{meta_str, rv_of};

pub(super) fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for p in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub(super) fn set_path(v: &mut Value, path: &str, val: Value) {
    let parts: Vec<&str> = path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect();
    let mut cur = v;
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i == parts.len() - 1 {
            m.insert(p.to_string(), val);
            return;
        }
        cur = m.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

impl Api {
    pub(super) fn require_scale(&self) -> ApiResult<()> {
        if self.info.scale.is_none() {
            return Err(ApiError::not_found_path());
        }
        Ok(())
    }

    pub(super) fn scale_of(&self, obj: &Value) -> Value {
        let Some(sc) = &self.info.scale else {
            return Value::Null;
        };
        let spec = get_path(obj, &sc.spec_replicas_path)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status = get_path(obj, &sc.status_replicas_path)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = match &sc.label_selector_path {
            Some(p) if !self.info.crd => {
                get_path(obj, p).map(|s| LabelSelector::from_object(s).to_string_form())
            }
            Some(p) => get_path(obj, p).and_then(Value::as_str).map(String::from),
            None => None,
        };
        let mut st = json!({"replicas": status});
        if let Some(s) = selector {
            st["selector"] = json!(s);
        }
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta_str(obj, "name"),
                "namespace": meta_str(obj, "namespace"),
                "uid": meta_str(obj, "uid"),
                "resourceVersion": meta_str(obj, "resourceVersion"),
                "creationTimestamp": meta_str(obj, "creationTimestamp"),
            },
            "spec": {"replicas": spec},
            "status": st,
        })
    }

    pub(super) async fn write_scale(
        &self,
        ctx: &mut Ctx,
        name: &str,
        put: Option<Value>,
        patch_body: Option<(PatchType, Value)>,
    ) -> ApiResult<Response> {
        self.require_scale()?;
        let Some(sc) = self.info.scale.clone() else {
            return Err(ApiError::not_found_path());
        };
        for _ in 0..10 {
            let cur = self.get_obj(name)?;
            let mut scale = self.scale_of(&cur);
            match (&put, &patch_body) {
                (Some(b), _) => {
                    let rv = meta_str(b, "resourceVersion").unwrap_or_default();
                    if !rv.is_empty() && rv != rv_of(&cur).to_string() {
                        return Err(ApiError::stale(&self.info.group, &self.info.plural, name));
                    }
                    scale = b.clone();
                }
                (None, Some((pt, b))) => match pt {
                    PatchType::Json => patch::json_patch(&mut scale, b)?,
                    PatchType::Strategic | PatchType::Merge => patch::merge_patch(&mut scale, b)?,
                    PatchType::Apply => patch::merge_patch(&mut scale, b)?,
                },
                _ => {}
            }
            let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
            let invalid = |msg: String| {
                let cause = Cause::new("FieldValueInvalid", "spec.replicas", msg);
                ApiError::invalid("autoscaling", "Scale", name, vec![cause])
            };
            let Some(r) = replicas.as_i64() else {
                return Err(invalid(format!(
                    "Invalid value: {replicas}: must be an integer"
                )));
            };
            if r < 0 {
                return Err(invalid(format!(
                    "Invalid value: {r}: must be greater than or equal to 0"
                )));
            }
            let mut new = (*cur).clone();
            set_path(&mut new, &sc.spec_replicas_path, json!(r));
            match self
                .finish_update(ctx, Some("scale"), &cur, new, rv_of(&cur))
                .await
            {
                Ok(out) => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &self.scale_of(&out),
                        &ctx.warnings,
                    ));
                }
                Err(e) if e.code == 409 && put.is_none() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(&self.info.group, &self.info.plural, name))
    }
}
