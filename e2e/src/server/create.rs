//! `create`, and the create-like POSTs answered without storage (reviews, TokenRequests).

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::route::{Ctx, json_response, parse_body};
use super::update::without;
use super::{Api, defaults_meta};
use crate::admission::Operation;
use crate::errors::{ApiError, ApiResult, Cause};
use crate::patch;
use crate::store::{meta_mut, meta_str};

impl Api {
    /// Access/token reviews: answered, never stored. Authorization is not enforced, so every
    /// access review is allowed.
    pub(super) fn review(&self, ctx: &mut Ctx) -> ApiResult<Response> {
        let mut obj = parse_body(ctx)?;
        self.check_type(&mut obj)?;
        let status =
            self.info
                .strategy
                .review_status(&obj, &ctx.user, self.shared.config.token.as_deref());
        obj["status"] = status;
        Ok(json_response(StatusCode::CREATED, &obj, &[]))
    }

    /// `serviceaccounts/{name}/token` (TokenRequest): returns the configured bearer token (so the
    /// token authenticates against this server) or an opaque random token when none is configured.
    pub(super) fn token_request(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
        self.get_obj(name)?;
        let mut req = if ctx.body.is_empty() {
            json!({})
        } else {
            parse_body(ctx)?
        };
        let secs = req
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        let token = self
            .shared
            .config
            .token
            .clone()
            .unwrap_or_else(|| format!("e2e-sa-token-{}", uuid::Uuid::new_v4().simple()));
        let exp = (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        req["apiVersion"] = json!("authentication.k8s.io/v1");
        req["kind"] = json!("TokenRequest");
        req["metadata"] = json!({"name": name, "namespace": self.ns, "creationTimestamp": null});
        if req.pointer("/spec/audiences").is_none() {
            req["spec"]["audiences"] = json!(["https://kubernetes.default.svc"]);
        }
        req["spec"]["expirationSeconds"] = json!(secs);
        req["status"] = json!({"token": token, "expirationTimestamp": exp});
        Ok(json_response(StatusCode::CREATED, &req, &[]))
    }

    pub(super) async fn create(&self, ctx: &mut Ctx) -> ApiResult<Response> {
        let mut obj = parse_body(ctx)?;
        self.check_type(&mut obj)?;
        let out = self.create_obj(ctx, obj).await?;
        Ok(self.object_response(ctx, StatusCode::CREATED, &out, &ctx.warnings))
    }

    pub(super) async fn create_obj(&self, ctx: &mut Ctx, mut obj: Value) -> ApiResult<Arc<Value>> {
        // name / generateName
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName")
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                return Err(self.info.invalid(
                    "",
                    vec![Cause::new(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
            use rand::Rng;
            const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let mut rng = rand::rng();
            let suffix: String = (0..5)
                .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
                .collect();
            name = format!("{prefix}{suffix}");
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        if self.info.namespaced {
            match self.shared.store.namespace_state(&self.ns) {
                None => return Err(ApiError::not_found("", "namespaces", &self.ns)),
                Some(true) => {
                    let mut e = ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                        crate::errors::qualified(&self.info.plural, &self.info.group),
                        name,
                        self.ns
                    ));
                    e.details = Some(
                        json!({"name": name, "group": self.info.group, "kind": self.info.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {} is being terminated", self.ns), "field": "metadata.namespace"}]}),
                    );
                    return Err(e);
                }
                Some(false) => {}
            }
        }
        {
            let m = meta_mut(&mut obj);
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                m.remove(k);
            }
        }
        let mut obj = defaults_meta(obj, self.info.tracks_generation);
        self.info.strategy.prepare_create(&self.info, &mut obj)?;
        let mut req = self.admission_request(Operation::Create, None, ctx, &name, Some(obj), None);
        self.run_hooks(&mut req).await?;
        let mut obj = req.object.take().unwrap_or(Value::Null);
        self.schema_process(ctx, &mut obj, None)?;
        self.validate_meta(&obj)?;
        req.object = Some(obj.clone());
        self.run_validating_hooks(&req).await?;
        let fm = ctx.field_manager();
        if !fm.is_empty()
            && meta_str(&obj, "managedFields").is_none()
            && obj.pointer("/metadata/managedFields").is_none()
        {
            let fields = patch::fields_v1(&without(&obj, &["status"]), !self.info.crd);
            patch::record_update(&mut obj, &fm, &self.info.api_version(), fields);
        }
        self.fault(&name)?;
        if ctx.dry_run() {
            if self
                .shared
                .store
                .get(&self.gr(), &self.key(&name))
                .is_some()
            {
                return Err(ApiError::already_exists(
                    &self.info.group,
                    &self.info.plural,
                    &name,
                ));
            }
            return Ok(Arc::new(obj));
        }
        let out = self.shared.store.create(&self.gr(), self.to_storage(obj))?;
        self.after_write(&out);
        Ok(out)
    }
}
