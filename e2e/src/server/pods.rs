//! The pod actions: `pods/binding` (the scheduler's assignment) and `pods/eviction`.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::route::{Ctx, json_response, parse_body};
use crate::admission::Operation;
use crate::errors::{ApiError, ApiResult, Cause, status_success};
use crate::store::{self, Propagation, is_deleting, meta_mut, rv_of};

impl Api {
    pub(super) async fn bind(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
        let binding = parse_body(ctx)?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause::new(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        for _ in 0..10 {
            let cur = self.get_obj(name)?;
            if is_deleting(&cur) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(n) = cur
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{n}\""),
                ));
            }
            let mut new = (*cur).clone();
            new["spec"]["nodeName"] = json!(node);
            if let Some(ann) = binding
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                let m = meta_mut(&mut new);
                let a = m.entry("annotations").or_insert_with(|| json!({}));
                for (k, v) in ann {
                    a[k] = v.clone();
                }
            }
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c.get("type") != Some(&json!("PodScheduled")))
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": store::now_ts()}));
            new["status"]["conditions"] = json!(conds);
            let mut req = self.admission_request(
                Operation::Create,
                Some("binding"),
                ctx,
                name,
                Some(binding.clone()),
                None,
            );
            self.run_hooks(&mut req).await?;
            self.run_validating_hooks(&req).await?;
            self.fault(name)?;
            if ctx.dry_run() {
                break;
            }
            match self.shared.store.update(&self.gr(), new, Some(rv_of(&cur))) {
                Ok(_) => break,
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        let mut body = status_success(name, "", "pods", None);
        body["code"] = json!(201);
        Ok(json_response(StatusCode::CREATED, &body, &[]))
    }

    pub(super) async fn evict(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
        let ev = parse_body(ctx).unwrap_or(json!({}));
        let cur = self.get_obj(name)?;
        let mut req = self.admission_request(
            Operation::Create,
            Some("eviction"),
            ctx,
            name,
            Some(ev.clone()),
            Some((*cur).clone()),
        );
        self.run_hooks(&mut req).await?;
        self.run_validating_hooks(&req).await?;
        self.fault(name)?;
        let grace = ev
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64);
        if !ctx.dry_run() {
            self.shared.store.delete(
                &self.gr(),
                &self.key(name),
                Propagation::Background,
                grace,
                (None, None),
            )?;
        }
        let mut body = status_success(name, "", "pods", None);
        body["code"] = json!(201);
        Ok(json_response(StatusCode::CREATED, &body, &[]))
    }
}
