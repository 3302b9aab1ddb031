//! Routing and request decoding: the request context, the route of a path, the answers every
//! verb shares, and which verb handler a request goes to.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use serde_json::{Value, json};

use super::{Api, Shared};
use crate::errors::{ApiError, ApiResult};
use crate::registry::ResourceInfo;
use crate::strategy::Action;
use crate::{openapi, watch};

pub(crate) struct Ctx {
    pub method: Method,
    pub query: Vec<(String, String)>,
    pub accept: String,
    pub content_type: String,
    pub body: Bytes,
    pub user: String,
    pub warnings: Vec<String>,
}

impl Ctx {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }
    pub(crate) fn field_manager(&self) -> String {
        self.q("fieldManager").unwrap_or_default().to_string()
    }
    pub fn wants_table(&self) -> bool {
        self.accept.contains("as=Table")
    }
    /// `as=PartialObjectMetadata` (or `...List`) asked for: objects are answered with their
    /// metadata only, for every verb, as kube-apiserver does.
    pub fn wants_metadata(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
    /// Answer reads (get, list, watch) of `info` in protobuf: the client puts
    /// `application/vnd.kubernetes.protobuf` first in Accept (client-go's typed clients, kubectl),
    /// wants the objects themselves (no table, no metadata-only) and the kind is built-in with a
    /// protobuf message. Custom resources stay JSON, as with kube-apiserver.
    pub fn wants_protobuf(&self, info: &ResourceInfo) -> bool {
        crate::protowire::is_protobuf(self.accept.split(',').next())
            && !self.wants_table()
            && !self.wants_metadata()
            && !info.crd
            && crate::proto::supports(&info.api_version(), &info.kind)
            && crate::proto::supports(&info.api_version(), &info.list_kind())
    }
}

/// A 200 answer with a protobuf body.
pub(super) fn protobuf_ok(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, crate::protowire::MEDIA_TYPE)],
        body,
    )
        .into_response()
}

enum Route {
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    ResourceList(String, String),
    Resource {
        group: String,
        version: String,
        ns: Option<String>,
        plural: String,
        name: Option<String>,
        sub: Option<String>,
    },
    OpenApiV3Index,
    OpenApiV3Doc(String),
    Faults(String),
    NotFound,
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3Doc(rest.join("/")),
        ["_emulator", "faults", rest @ ..] => Route::Faults(rest.join("/")),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let r =
        |ns: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| Route::Resource {
            group: group.into(),
            version: version.into(),
            ns: ns.map(String::from),
            plural: plural.into(),
            name: name.map(String::from),
            sub: sub.map(String::from),
        };
    match rest {
        [] => Route::ResourceList(group.into(), version.into()),
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            r(None, "namespaces", Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => r(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => r(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => r(Some(ns), plural, Some(name), Some(sub)),
        [plural] => r(None, plural, None, None),
        [plural, name] => r(None, plural, Some(name), None),
        [plural, name, sub] => r(None, plural, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

pub(crate) fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default();
    let header = |h: http::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let route = parse_route(&path);
    if let Some(token) = &shared.config.token
        && !matches!(route, Route::Health)
    {
        let auth = header(http::header::AUTHORIZATION);
        if auth != format!("Bearer {token}") {
            return ApiError::unauthorized().into_response();
        }
    }
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    let mut ctx = Ctx {
        method: parts.method.clone(),
        query,
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        body,
        // one identity: every authenticated (or, without a token, every) request is the admin
        user: "admin".into(),
        warnings: vec![],
    };
    if ctx.content_type.contains("protobuf") && !ctx.body.is_empty() {
        match crate::proto::decode(&ctx.body) {
            Ok(v) => {
                ctx.body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                ctx.content_type = "application/json".into();
            }
            Err(e) => return ApiError::new(415, "UnsupportedMediaType", e).into_response(),
        }
    }
    if ctx.content_type.contains("protobuf") || ctx.content_type.contains("cbor") {
        // clients (client-go) fall back to JSON on 415
        return ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {})", ctx.content_type),
        )
        .into_response();
    }
    let result = dispatch(&shared, route, &mut ctx).await;
    match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(shared: &Arc<Shared>, route: Route, ctx: &mut Ctx) -> ApiResult<Response> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    match route {
        Route::Version => ok(json!({
            "major": "1", "minor": "33", "gitVersion": shared.config.git_version, "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
            "emulationMajor": "1", "emulationMinor": "33", "minCompatibilityMajor": "1", "minCompatibilityMinor": "32"
        })),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::Api | Route::Apis
            if ctx
                .accept
                .contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList") =>
        {
            let core = matches!(route, Route::Api);
            let body = serde_json::to_vec(&shared.registry.aggregated(core)).unwrap_or_default();
            Ok((
                StatusCode::OK,
                [(
                    http::header::CONTENT_TYPE,
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                )],
                body,
            )
                .into_response())
        }
        Route::Api => ok(shared.registry.api_versions()),
        Route::Apis => ok(shared.registry.api_group_list()),
        Route::Group(g) => shared
            .registry
            .api_group(&g)
            .map_or_else(|| Err(ApiError::not_found_path()), ok),
        Route::ResourceList(g, v) => shared
            .registry
            .resource_list(&g, &v)
            .map_or_else(|| Err(ApiError::not_found_path()), ok),
        Route::OpenApiV3Index => ok(openapi::index(&shared.registry)),
        Route::OpenApiV3Doc(p) => openapi::document(&shared.registry, &p)
            .map_or_else(|| Err(ApiError::not_found_path()), ok),
        Route::Faults(rest) => ok(shared.faults.handle_http(&ctx.method, &rest, &ctx.body)?),
        Route::NotFound => Err(ApiError::not_found_path()),
        Route::Resource {
            group,
            version,
            ns,
            plural,
            name,
            sub,
        } => {
            let Some(info) = shared.registry.get(&group, &version, &plural) else {
                return Err(ApiError::not_found_path());
            };
            if info.namespaced && name.is_some() && ns.is_none() {
                return Err(ApiError::not_found_path());
            }
            if !info.namespaced && ns.is_some() {
                return Err(ApiError::not_found_path());
            }
            let api = Api {
                shared: shared.clone(),
                info,
                ns: ns.unwrap_or_default(),
            };
            api.serve(ctx, name, sub).await
        }
    }
}

/// Parse a request body (JSON, or YAML for apply/yaml content types).
pub(super) fn parse_body(ctx: &Ctx) -> ApiResult<Value> {
    if ctx.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ctx.content_type.contains("yaml") {
        serde_yaml::from_slice::<Value>(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

impl Api {
    pub(super) async fn serve(
        &self,
        ctx: &mut Ctx,
        name: Option<String>,
        sub: Option<String>,
    ) -> ApiResult<Response> {
        let m = ctx.method.clone();
        match (m.as_str(), name, sub) {
            ("GET", None, None) => {
                let watching = ctx.q("watch").is_some_and(|w| w == "true" || w == "1");
                if watching {
                    watch::serve(self, ctx)
                } else {
                    self.list(ctx)
                }
            }
            ("GET", Some(n), sub) if sub.as_deref() != Some("scale") => {
                if let Some(s) = &sub
                    && !self.sub_allowed(s)
                {
                    return Err(ApiError::not_found_path());
                }
                self.get(ctx, &n)
            }
            ("GET", Some(n), Some(s)) if s == "scale" => {
                self.require_scale()?;
                let obj = self.get_obj(&n)?;
                Ok(json_response(StatusCode::OK, &self.scale_of(&obj), &[]))
            }
            ("POST", None, None) if self.info.is_review() => self.review(ctx),
            ("POST", None, None) => self.create(ctx).await,
            ("POST", Some(n), Some(s)) => match self.info.strategy.action(&s) {
                Some(Action::Token) => self.token_request(ctx, &n),
                Some(Action::Bind) => self.bind(ctx, &n).await,
                Some(Action::Evict) => self.evict(ctx, &n).await,
                None => Err(ApiError::method_not_allowed()),
            },
            ("PUT", Some(n), sub) => {
                if let Some(s) = &sub
                    && !self.sub_allowed(s)
                {
                    return Err(ApiError::not_found_path());
                }
                self.update(ctx, &n, sub.as_deref()).await
            }
            ("PATCH", Some(n), sub) => {
                if let Some(s) = &sub
                    && !self.sub_allowed(s)
                {
                    return Err(ApiError::not_found_path());
                }
                self.patch(ctx, &n, sub.as_deref()).await
            }
            ("DELETE", Some(n), None) => self.delete(ctx, &n).await,
            ("DELETE", None, None) => self.delete_collection(ctx).await,
            _ => Err(ApiError::method_not_allowed()),
        }
    }
}
