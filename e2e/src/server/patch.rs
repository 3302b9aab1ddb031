//! `patch`: merge, JSON, strategic merge and server-side apply (which may create).

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::Value;

use super::Api;
use super::route::{Ctx, parse_body};
use crate::errors::{ApiError, ApiResult, Cause};
use crate::patch::{self, PatchType};
use crate::store::{meta_mut, meta_str, rv_of};

impl Api {
    pub(super) async fn patch(
        &self,
        ctx: &mut Ctx,
        name: &str,
        sub: Option<&str>,
    ) -> ApiResult<Response> {
        let Some(pt) = PatchType::from_content_type(&ctx.content_type) else {
            return Err(ApiError::unsupported_media(&ctx.content_type));
        };
        if pt == PatchType::Strategic && self.info.crd {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources; use merge patch or server-side apply",
            ));
        }
        let body = parse_body(ctx)?;
        if sub == Some("scale") {
            return self.write_scale(ctx, name, None, Some((pt, body))).await;
        }
        for _attempt in 0..10 {
            let cur = match self.shared.store.get(&self.gr(), &self.key(name)) {
                Some(c) => c,
                None if pt == PatchType::Apply && sub.is_none() => {
                    return self.apply_create(ctx, name, &body).await;
                }
                None => return Err(self.info.not_found(name)),
            };
            let new = self.patched(ctx, pt, &body, &cur, name)?;
            // a resourceVersion in the patch is a precondition
            let patched_rv = meta_str(&new, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            match self.finish_update(ctx, sub, &cur, new, rv_of(&cur)).await {
                Ok(out) => {
                    return Ok(self.object_response(ctx, StatusCode::OK, &out, &ctx.warnings));
                }
                Err(e) if e.code == 409 && e.reason == "Conflict" && patched_rv.is_empty() => {
                    // retry on a concurrent write, like kube-apiserver's GuaranteedUpdate
                    if self
                        .shared
                        .store
                        .get(&self.gr(), &self.key(name))
                        .map(|o| rv_of(&o))
                        == Some(rv_of(&cur))
                    {
                        return Err(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(&self.info.group, &self.info.plural, name))
    }

    /// Server-side apply of an object that does not exist yet: a create.
    async fn apply_create(&self, ctx: &mut Ctx, name: &str, body: &Value) -> ApiResult<Response> {
        let mut applied = body.clone();
        self.check_type(&mut applied)?;
        if meta_str(&applied, "name").unwrap_or_default() != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&applied, "name").unwrap_or_default()
            )));
        }
        let fm = self.apply_field_manager(ctx, name)?;
        let obj = patch::server_side_apply(
            None,
            &applied,
            &fm,
            true,
            !self.info.crd,
            &self.info.api_version(),
        )?;
        let out = self.create_obj(ctx, obj).await?;
        Ok(self.object_response(ctx, StatusCode::CREATED, &out, &ctx.warnings))
    }

    /// The fieldManager an apply patch must name.
    fn apply_field_manager(&self, ctx: &Ctx, name: &str) -> ApiResult<String> {
        let fm = ctx.field_manager();
        if fm.is_empty() {
            return Err(self.info.invalid(
                name,
                vec![Cause::new(
                    "FieldValueRequired",
                    "fieldManager",
                    "Required value: is required for apply patch",
                )],
            ));
        }
        Ok(fm)
    }

    /// `cur` (at the requested version) with the patch applied, checked against what a patch
    /// may not do (a stale resourceVersion precondition, another name or uid).
    fn patched(
        &self,
        ctx: &Ctx,
        pt: PatchType,
        body: &Value,
        cur: &Arc<Value>,
        name: &str,
    ) -> ApiResult<Value> {
        let mut new = self.present(cur);
        // a resourceVersion left in the result must come from the patch (a precondition)
        let json_patch_touches_rv = pt == PatchType::Json
            && body.as_array().is_some_and(|ops| {
                ops.iter().any(|op| {
                    op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                })
            });
        if !json_patch_touches_rv {
            meta_mut(&mut new).remove("resourceVersion");
        }
        match pt {
            PatchType::Merge => patch::merge_patch(&mut new, body)?,
            PatchType::Json => patch::json_patch(&mut new, body)?,
            PatchType::Strategic => patch::strategic_merge(&mut new, body)?,
            PatchType::Apply => {
                let mut applied = body.clone();
                self.check_type(&mut applied)?;
                let fm = self.apply_field_manager(ctx, name)?;
                let force = ctx.q("force").is_some_and(|f| f == "true");
                new = patch::server_side_apply(
                    Some(&new),
                    &applied,
                    &fm,
                    force,
                    !self.info.crd,
                    &self.info.api_version(),
                )?;
            }
        }
        let patched_rv = meta_str(&new, "resourceVersion").unwrap_or_default();
        if !patched_rv.is_empty() && patched_rv != rv_of(cur).to_string() {
            return Err(ApiError::stale(&self.info.group, &self.info.plural, name));
        }
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "metadata.name cannot be changed by a patch",
            ));
        }
        // uid is immutable: a patch naming another uid (a client binding its write to the
        // object it saw) is refused, as kube-apiserver's metadata update validation does
        if let Some(uid) = meta_str(&new, "uid")
            && Some(uid) != meta_str(cur, "uid")
        {
            return Err(self.info.invalid(
                name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.uid",
                    format!("Invalid value: \"{uid}\": field is immutable"),
                )],
            ));
        }
        Ok(new)
    }
}
