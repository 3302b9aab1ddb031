//! `delete` and `deletecollection`: DeleteOptions, preconditions, dry runs, and the answer.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::route::{Ctx, json_response};
use crate::admission::Operation;
use crate::errors::{ApiError, ApiResult, Cause, status_success};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{self, DeleteOutcome, Propagation, meta_str};

pub(super) struct DeleteOpts {
    policy: Propagation,
    grace: Option<i64>,
    pre: (Option<String>, Option<String>),
    dry: bool,
}

impl Api {
    pub(super) fn delete_options(&self, ctx: &Ctx) -> ApiResult<DeleteOpts> {
        let opts: Value = if ctx.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let mut policy = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(p) = ctx.q("propagationPolicy") {
            policy = Some(p.to_string());
        }
        if opts.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            || ctx.q("orphanDependents") == Some("true")
        {
            policy = Some("Orphan".into());
        }
        let policy = match policy.as_deref() {
            None | Some("Background") | Some("") => Propagation::Background,
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            Some(other) => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    vec![Cause::new(
                        "FieldValueNotSupported",
                        "propagationPolicy",
                        format!(
                            "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                        ),
                    )],
                ));
            }
        };
        let grace = ctx
            .q("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| opts.get("gracePeriodSeconds").and_then(Value::as_i64));
        let pre = (
            opts.pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            opts.pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
        );
        let dry = ctx.dry_run()
            || opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        Ok(DeleteOpts {
            policy,
            grace,
            pre,
            dry,
        })
    }

    pub(super) async fn delete(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
        let DeleteOpts {
            policy,
            grace,
            pre,
            dry,
        } = self.delete_options(ctx)?;
        let cur = self.get_obj(name)?;
        let req = self.admission_request(
            Operation::Delete,
            None,
            ctx,
            name,
            None,
            Some((*cur).clone()),
        );
        let mut req2 = req.clone();
        self.run_hooks(&mut req2).await?;
        self.run_validating_hooks(&req).await?;
        self.fault(name)?;
        if dry {
            return Ok(self.object_response(ctx, StatusCode::OK, &cur, &[]));
        }
        match self
            .shared
            .store
            .delete(&self.gr(), &self.key(name), policy, grace, pre)?
        {
            DeleteOutcome::Pending(obj) => Ok(self.object_response(ctx, StatusCode::OK, &obj, &[])),
            DeleteOutcome::Deleted(obj) => {
                self.after_delete(&obj);
                if self.info.crd || self.info.strategy.delete_returns_object() {
                    Ok(self.object_response(ctx, StatusCode::OK, &obj, &[]))
                } else {
                    let body = status_success(
                        name,
                        &self.info.group,
                        &self.info.plural,
                        meta_str(&obj, "uid"),
                    );
                    Ok(json_response(StatusCode::OK, &body, &[]))
                }
            }
        }
    }

    pub(super) async fn delete_collection(&self, ctx: &mut Ctx) -> ApiResult<Response> {
        let label = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())?;
        let field = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())?;
        let DeleteOpts {
            policy, grace, dry, ..
        } = self.delete_options(ctx)?;
        let ns = if self.info.namespaced && !self.ns.is_empty() {
            Some(self.ns.as_str())
        } else {
            None
        };
        let (items, rv) = self.shared.store.list(&self.gr(), ns);
        let mut deleted = Vec::new();
        for o in items
            .iter()
            .filter(|o| label.matches(o) && field.matches(o))
        {
            let key = store::key_of(o);
            self.fault(&key.1)?;
            if dry {
                deleted.push(self.present(o));
                continue;
            }
            match self
                .shared
                .store
                .delete(&self.gr(), &key, policy, grace, (None, None))
            {
                Ok(DeleteOutcome::Deleted(obj)) => {
                    self.after_delete(&obj);
                    deleted.push(self.present(&obj));
                }
                Ok(DeleteOutcome::Pending(obj)) => deleted.push(self.present(&obj)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let body = json!({"apiVersion": self.info.api_version(), "kind": self.info.list_kind(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted});
        Ok(json_response(StatusCode::OK, &body, &[]))
    }
}
