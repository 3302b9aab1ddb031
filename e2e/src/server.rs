//! The HTTP front: routing, verbs, object semantics on top of the store.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::admission::{AdmissionHook, AdmissionRequest, Operation};
use crate::errors::{ApiError, ApiResult, Cause, status_success};
use crate::faults::Faults;
use crate::patch::{self, PatchType};
use crate::registry::{GroupResource, Registry, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{
    self, DeleteOutcome, Propagation, Store, is_deleting, meta_mut, meta_str, rv_of,
};
use crate::validation::{Mode, Outcome, Walker};
use crate::{openapi, table, watch};

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Require `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Events kept per resource before compaction (older watches get 410).
    pub history_limit: usize,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Watch duration when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Pods bound to a node are deleted gracefully (deletionTimestamp + grace period; a kubelet
    /// must finish the deletion). Off by default: there are no kubelets in a bare API server.
    pub graceful_pod_deletion: bool,
    /// Version reported by `/version`.
    pub git_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(10),
            default_watch_timeout: Duration::from_secs(1800),
            graceful_pod_deletion: false,
            git_version: "v1.33.0-emulated".into(),
        }
    }
}

pub(crate) struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub faults: Faults,
    pub hooks: RwLock<Vec<Arc<dyn AdmissionHook>>>,
    pub kubeconfig: Mutex<Option<String>>,
}

/// The emulated API server. Cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl ApiServer {
    /// A new server with the built-in resources and the default namespaces.
    pub fn new(config: Config) -> Self {
        let store = Arc::new(Store::new(
            config.history_limit,
            config.graceful_pod_deletion,
        ));
        let shared = Arc::new(Shared {
            faults: Faults::new(store.clone()),
            registry: Registry::with_builtins(),
            store,
            config,
            hooks: RwLock::new(Vec::new()),
            kubeconfig: Mutex::new(None),
        });
        let srv = ApiServer { shared };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            let _ = srv.shared.store.create(
                &GroupResource::new("", "namespaces"),
                defaults_meta(obj, true),
            );
        }
        srv
    }

    /// The axum router serving the whole API (use in-process or behind a listener).
    pub fn router(&self) -> axum::Router {
        let shared = self.shared.clone();
        axum::Router::new().fallback(move |req: Request<Body>| {
            let shared = shared.clone();
            async move { handle(shared, req).await }
        })
    }

    /// An in-process `kube::Client` (no socket). Must be called inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let token = self.shared.config.token.clone();
        let router = self.router();
        match token {
            None => kube::Client::new(router, "default"),
            Some(t) => {
                let value = HeaderValue::from_str(&format!("Bearer {t}"))
                    .unwrap_or(HeaderValue::from_static(""));
                let svc = tower::ServiceBuilder::new()
                    .map_request(move |mut r: Request<kube::client::Body>| {
                        r.headers_mut()
                            .insert(http::header::AUTHORIZATION, value.clone());
                        r
                    })
                    .service(router);
                kube::Client::new(svc, "default")
            }
        }
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The resource registry (discovery).
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Direct storage access (for tests and benchmarks; controllers should use the API).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Register an admission hook (called in registration order).
    pub fn add_admission_hook(&self, hook: Arc<dyn AdmissionHook>) {
        self.shared
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The kubeconfig written by the last `serve_tcp`, if any.
    pub fn kubeconfig_yaml(&self) -> Option<String> {
        self.shared
            .kubeconfig
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Default server-set metadata for a new object.
fn defaults_meta(mut obj: Value, generation: bool) -> Value {
    let m = meta_mut(&mut obj);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(store::now_ts()));
    if generation {
        m.insert("generation".into(), json!(1));
    }
    obj
}

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
    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }
    fn field_manager(&self) -> String {
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
fn protobuf_ok(body: Vec<u8>) -> Response {
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

async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response {
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
fn parse_body(ctx: &Ctx) -> ApiResult<Value> {
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

struct DeleteOpts {
    policy: Propagation,
    grace: Option<i64>,
    pre: (Option<String>, Option<String>),
    dry: bool,
}

/// Per-request resource handler.
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub info: Arc<ResourceInfo>,
    pub ns: String,
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
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

fn set_path(v: &mut Value, path: &str, val: Value) {
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

/// `a == b` ignoring the top-level `keys` (no copies: this runs on every write).
fn eq_without(a: &Value, b: &Value, keys: &[&str]) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kept = |m: &serde_json::Map<String, Value>| {
                m.keys().filter(|k| !keys.contains(&k.as_str())).count()
            };
            kept(x) == kept(y)
                && x.iter()
                    .filter(|(k, _)| !keys.contains(&k.as_str()))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// `a == b` ignoring `metadata.resourceVersion` and `metadata.managedFields` (a write that
/// changes nothing else is a no-op). A missing or non-object `metadata` counts as empty.
fn same_but_rv_and_managed_fields(a: &Value, b: &Value) -> bool {
    const SERVER_OWNED: &[&str] = &["resourceVersion", "managedFields"];
    if !(a.is_object() && b.is_object()) {
        return a == b;
    }
    let empty = Value::Object(serde_json::Map::new());
    let meta = |v: &Value| v.get("metadata").filter(|m| m.is_object()).is_some();
    let (ma, mb) = (
        if meta(a) { &a["metadata"] } else { &empty },
        if meta(b) { &b["metadata"] } else { &empty },
    );
    eq_without(a, b, &["metadata"]) && eq_without(ma, mb, SERVER_OWNED)
}

fn without(v: &Value, keys: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        o => o.clone(),
    }
}

impl Api {
    fn gr(&self) -> GroupResource {
        self.info.gr()
    }

    /// Convert a request-version object to its storage form.
    fn to_storage(&self, obj: Value) -> Value {
        if self.info.is_new_events() {
            crate::convert::event_to_core(&obj)
        } else {
            obj
        }
    }

    fn key(&self, name: &str) -> (String, String) {
        (
            if self.info.namespaced {
                self.ns.clone()
            } else {
                String::new()
            },
            name.to_string(),
        )
    }

    /// The response carrying one object: as stored in this version, or its metadata only
    /// when the client asked for that.
    fn object_response(
        &self,
        ctx: &Ctx,
        code: StatusCode,
        obj: &Value,
        warnings: &[String],
    ) -> Response {
        if ctx.wants_metadata() {
            json_response(code, &table::partial_metadata(obj), warnings)
        } else {
            json_response(code, &self.present(obj), warnings)
        }
    }

    /// Present a stored object at the requested version.
    fn present(&self, obj: &Value) -> Value {
        let av = self.info.api_version();
        if obj.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
            return obj.clone();
        }
        if self.info.is_new_events() {
            return crate::convert::event_from_core(obj);
        }
        let mut o = obj.clone();
        o["apiVersion"] = json!(av);
        o
    }

    async fn serve(
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
                let obj = self.get_obj(&n)?;
                if ctx.wants_table() {
                    let rv = meta_str(&obj, "resourceVersion")
                        .unwrap_or_default()
                        .to_string();
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::table(&self.info, &[obj], &rv, ""),
                        &[],
                    ));
                }
                if ctx.wants_protobuf(&self.info) {
                    // JSON (the client accepts it too) for what cannot be encoded
                    match crate::proto::encode(&self.present(&obj)) {
                        Ok(b) => return Ok(protobuf_ok(b)),
                        Err(e) => tracing::warn!("protobuf encoding failed, answering JSON: {e}"),
                    }
                }
                Ok(self.object_response(ctx, StatusCode::OK, &obj, &[]))
            }
            ("GET", Some(n), Some(s)) if s == "scale" => {
                self.require_scale()?;
                let obj = self.get_obj(&n)?;
                Ok(json_response(StatusCode::OK, &self.scale_of(&obj), &[]))
            }
            ("POST", None, None) if self.info.is_review() => self.review(ctx),
            ("POST", Some(n), Some(s))
                if s == "token"
                    && self.info.group.is_empty()
                    && self.info.plural == "serviceaccounts" =>
            {
                self.token_request(ctx, &n)
            }
            ("POST", None, None) => self.create(ctx).await,
            ("POST", Some(n), Some(s)) if s == "binding" && self.is_pods() => {
                self.bind(ctx, &n).await
            }
            ("POST", Some(n), Some(s)) if s == "eviction" && self.is_pods() => {
                self.evict(ctx, &n).await
            }
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

    /// Access/token reviews: answered, never stored. Authorization is not enforced, so every
    /// access review is allowed.
    fn review(&self, ctx: &mut Ctx) -> ApiResult<Response> {
        let mut obj = parse_body(ctx)?;
        self.check_type(&mut obj)?;
        let status = match self.info.kind.as_str() {
            "SelfSubjectRulesReview" => json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
            "SelfSubjectReview" => {
                json!({"userInfo": {"username": ctx.user, "groups": ["system:masters", "system:authenticated"]}})
            }
            "TokenReview" => {
                let token = obj
                    .pointer("/spec/token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ok = self
                    .shared
                    .config
                    .token
                    .as_deref()
                    .is_none_or(|t| t == token);
                if ok {
                    json!({"authenticated": true, "user": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}})
                } else {
                    json!({"authenticated": false, "error": "invalid bearer token"})
                }
            }
            _ => {
                json!({"allowed": true, "reason": "the emulated API server does not enforce authorization"})
            }
        };
        obj["status"] = status;
        Ok(json_response(StatusCode::CREATED, &obj, &[]))
    }

    /// `serviceaccounts/{name}/token` (TokenRequest): returns the configured bearer token (so the
    /// token authenticates against this server) or an opaque random token when none is configured.
    fn token_request(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
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

    fn is_pods(&self) -> bool {
        self.info.group.is_empty() && self.info.plural == "pods"
    }

    fn sub_allowed(&self, s: &str) -> bool {
        match s {
            "status" => self.info.status,
            "scale" => self.info.scale.is_some(),
            "finalize" => self.info.group.is_empty() && self.info.plural == "namespaces",
            "resize" => self.is_pods(),
            _ => false,
        }
    }

    fn require_scale(&self) -> ApiResult<()> {
        if self.info.scale.is_none() {
            return Err(ApiError::not_found_path());
        }
        Ok(())
    }

    fn get_obj(&self, name: &str) -> ApiResult<Arc<Value>> {
        self.shared
            .store
            .get(&self.gr(), &self.key(name))
            .ok_or_else(|| self.info.not_found(name))
    }

    fn list(&self, ctx: &Ctx) -> ApiResult<Response> {
        let label = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())?;
        let field = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())?;
        let ns = if self.info.namespaced && !self.ns.is_empty() {
            Some(self.ns.as_str())
        } else {
            None
        };
        let (items, cur_rv) = self.shared.store.list(&self.gr(), ns);
        let rv_param = ctx.q("resourceVersion").unwrap_or_default();
        let rv_match = ctx.q("resourceVersionMatch").unwrap_or_default();
        if !rv_param.is_empty() && rv_param != "0" {
            let want: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?;
            if rv_match == "Exact" && want != cur_rv {
                return Err(ApiError::gone(format!(
                    "too old resource version: {want} ({cur_rv})"
                )));
            }
            if want > cur_rv {
                let mut e = ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {want}, current: {cur_rv}"),
                );
                e.details = Some(
                    json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                );
                return Err(e);
            }
        }
        let limit: usize = ctx.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut list_rv = cur_rv;
        let mut start: Option<(String, String)> = None;
        if let Some(c) = ctx.q("continue").filter(|c| !c.is_empty()) {
            use base64::Engine;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            list_rv = raw.get("rv").and_then(Value::as_u64).unwrap_or(cur_rv);
            if !self.shared.store.check_not_compacted(&self.gr(), list_rv) {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            start = Some((
                raw.get("ns")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                raw.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
            ));
        }
        let mut matched: Vec<Arc<Value>> = items
            .into_iter()
            .filter(|o| start.as_ref().is_none_or(|s| store::key_of(o) > *s))
            .filter(|o| {
                if self.info.is_new_events() {
                    let p = self.present(o);
                    label.matches(&p) && field.matches(&p)
                } else {
                    label.matches(o) && field.matches(o)
                }
            })
            .collect();
        let mut cont = None;
        let mut remaining = None;
        if limit > 0 && matched.len() > limit {
            let rest = matched.len() - limit;
            matched.truncate(limit);
            if let Some(last) = matched.last() {
                let (ns, name) = store::key_of(last);
                use base64::Engine;
                cont = Some(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                        serde_json::to_vec(&json!({"rv": list_rv, "ns": ns, "name": name}))
                            .unwrap_or_default(),
                    ),
                );
                remaining = Some(rest);
            }
        }
        let rv = list_rv.to_string();
        if ctx.wants_table() {
            let objs: Vec<Arc<Value>> = matched;
            let mut t = table::table(&self.info, &objs, &rv, cont.as_deref().unwrap_or_default());
            if let Some(r) = remaining {
                t["metadata"]["remainingItemCount"] = json!(r);
            }
            return Ok(json_response(StatusCode::OK, &t, &[]));
        }
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
            meta["remainingItemCount"] = json!(remaining);
        }
        if ctx.wants_metadata() {
            let items: Vec<Value> = matched.iter().map(|o| table::partial_metadata(o)).collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                &[],
            ));
        }
        let av = self.info.api_version();
        if ctx.wants_protobuf(&self.info) {
            let items: Vec<std::borrow::Cow<'_, Value>> = matched
                .iter()
                .map(|o| {
                    if o.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                        std::borrow::Cow::Borrowed(&**o)
                    } else {
                        std::borrow::Cow::Owned(self.present(o))
                    }
                })
                .collect();
            let encoded = crate::proto::encode_list(
                &av,
                &self.info.list_kind(),
                &meta,
                items.iter().map(|o| &**o),
            );
            match encoded {
                Ok(b) => return Ok(protobuf_ok(b)),
                Err(e) => tracing::warn!("protobuf encoding failed, answering JSON: {e}"),
            }
        }
        // serialize items straight from storage (no clones for the common case)
        let mut buf = Vec::with_capacity(256 + matched.len() * 512);
        buf.extend_from_slice(b"{\"apiVersion\":");
        buf.extend_from_slice(&serde_json::to_vec(&av).unwrap_or_default());
        buf.extend_from_slice(b",\"kind\":");
        buf.extend_from_slice(&serde_json::to_vec(&self.info.list_kind()).unwrap_or_default());
        buf.extend_from_slice(b",\"metadata\":");
        buf.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
        buf.extend_from_slice(b",\"items\":[");
        for (i, o) in matched.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            if o.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                let _ = serde_json::to_writer(&mut buf, &**o);
            } else {
                let _ = serde_json::to_writer(&mut buf, &self.present(o));
            }
        }
        buf.extend_from_slice(b"]}");
        Ok((
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            buf,
        )
            .into_response())
    }

    /// Check apiVersion/kind of a body, filling them when missing.
    fn check_type(&self, obj: &mut Value) -> ApiResult<()> {
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
    fn schema_process(&self, ctx: &mut Ctx, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
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

    fn validate_meta(&self, obj: &Value) -> ApiResult<()> {
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
        let lenient = self.info.group.is_empty()
            && matches!(self.info.plural.as_str(), "events" | "nodes")
            || self.info.group.starts_with("rbac")
            || self.info.plural == "leases";
        if !lenient && !re_ok(name) {
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

    async fn run_hooks(&self, req: &mut AdmissionRequest) -> ApiResult<()> {
        let hooks: Vec<Arc<dyn AdmissionHook>> = self
            .shared
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in &hooks {
            h.mutate(req).await?;
        }
        Ok(())
    }

    async fn run_validating_hooks(&self, req: &AdmissionRequest) -> ApiResult<()> {
        let hooks: Vec<Arc<dyn AdmissionHook>> = self
            .shared
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in &hooks {
            h.validate(req).await?;
        }
        Ok(())
    }

    fn admission_request(
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

    fn fault(&self, name: &str) -> ApiResult<()> {
        match self.shared.faults.take_write_fault(&self.gr(), name) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_crd_kind(&self) -> bool {
        self.info.group == "apiextensions.k8s.io" && self.info.plural == "customresourcedefinitions"
    }

    /// Built-in strategy on create: status reset, defaults, CRD conditions.
    fn prepare_create(&self, obj: &mut Value) -> ApiResult<()> {
        if self.info.status
            && !matches!(
                self.info.plural.as_str(),
                "nodes" | "customresourcedefinitions"
            )
        {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            match (self.info.group.as_str(), self.info.plural.as_str()) {
                ("", "pods") => obj["status"] = json!({"phase": "Pending"}),
                ("", "namespaces") => {
                    obj["status"] = json!({"phase": "Active"});
                    obj["spec"]["finalizers"] = json!(["kubernetes"]);
                    let name = meta_str(obj, "name").unwrap_or_default().to_string();
                    let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
                ("", "persistentvolumeclaims") => obj["status"] = json!({"phase": "Pending"}),
                _ => {}
            }
        }
        if !self.info.crd {
            defaults::apply(&self.info.group, &self.info.plural, obj);
        }
        if self.info.group.is_empty() && self.info.plural == "services" {
            defaults::allocate_service(obj);
        }
        if self.is_crd_kind() {
            crate::registry::crd_resources(obj)?;
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let storage: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let now = store::now_ts();
            obj["status"] = json!({
                "acceptedNames": names,
                "storedVersions": storage,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ]
            });
        }
        Ok(())
    }

    fn after_write(&self, obj: &Value) {
        if self.is_crd_kind()
            && !is_deleting(obj)
            && let Ok(infos) = crate::registry::crd_resources(obj)
            && let Some(first) = infos.first()
        {
            let (g, p) = (first.group.clone(), first.plural.clone());
            self.shared.registry.set_crd(&g, &p, infos);
        }
    }

    fn after_delete(&self, obj: &Value) {
        if self.is_crd_kind() {
            let g = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let p = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.shared.store.drop_all(&GroupResource::new(&g, &p));
            self.shared.registry.remove_crd(&g, &p);
        }
    }

    async fn create(&self, ctx: &mut Ctx) -> ApiResult<Response> {
        let mut obj = parse_body(ctx)?;
        self.check_type(&mut obj)?;
        let out = self.create_obj(ctx, obj).await?;
        Ok(self.object_response(ctx, StatusCode::CREATED, &out, &ctx.warnings))
    }

    async fn create_obj(&self, ctx: &mut Ctx, mut obj: Value) -> ApiResult<Arc<Value>> {
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
        self.prepare_create(&mut obj)?;
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

    /// Shared tail of update/patch/status/scale writes.
    async fn finish_update(
        &self,
        ctx: &mut Ctx,
        sub: Option<&str>,
        cur: &Arc<Value>,
        mut new: Value,
        expected_rv: u64,
    ) -> ApiResult<Arc<Value>> {
        let presented;
        let cur = if self.info.is_new_events() {
            presented = Arc::new(self.present(cur));
            &presented
        } else {
            cur
        };
        let name = meta_str(cur, "name").unwrap_or_default().to_string();
        // immutable / server-owned metadata
        {
            let empty = json!({});
            let cm = cur.get("metadata").unwrap_or(&empty);
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match cm.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            if !m.contains_key("managedFields")
                && let Some(mf) = cm.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
            m.remove("resourceVersion");
        }
        new["apiVersion"] = cur
            .get("apiVersion")
            .cloned()
            .unwrap_or(json!(self.info.api_version()));
        new["kind"] = json!(self.info.kind);
        match sub {
            Some("status") => {
                // only status changes
                let status = new.get("status").cloned();
                let mf = new.pointer("/metadata/managedFields").cloned();
                new = (**cur).clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if let Some(mf) = mf {
                    meta_mut(&mut new).insert("managedFields".into(), mf);
                }
            }
            Some("scale") => {}
            Some("resize") => {
                // only containers' resources (and resizePolicy) change through pods/resize
                let wanted = new
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                new = (**cur).clone();
                if let Some(cs) = new
                    .pointer_mut("/spec/containers")
                    .and_then(Value::as_array_mut)
                {
                    for c in cs {
                        let name = c.get("name").cloned();
                        if let Some(w) = wanted.iter().find(|w| w.get("name") == name.as_ref()) {
                            for k in ["resources", "resizePolicy"] {
                                match w.get(k) {
                                    Some(v) => c[k] = v.clone(),
                                    None => {
                                        if let Some(m) = c.as_object_mut() {
                                            m.remove(k);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Some("finalize") => {
                let fins = new.pointer("/spec/finalizers").cloned();
                new = (**cur).clone();
                match fins {
                    Some(f) => new["spec"]["finalizers"] = f,
                    None => {
                        if let Some(s) = new.get_mut("spec").and_then(Value::as_object_mut) {
                            s.remove("finalizers");
                        }
                    }
                }
            }
            _ => {
                if self.info.status {
                    match cur.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if self.is_crd_kind() {
                    crate::registry::crd_resources(&new)?;
                    if let Some(s) = cur.get("status") {
                        new["status"] = s.clone();
                    }
                    new["status"]["acceptedNames"] =
                        new.pointer("/spec/names").cloned().unwrap_or(json!({}));
                }
                if self.info.group.is_empty() && self.info.plural == "services" {
                    // an update without clusterIP keeps the allocated one (as upstream)
                    let empty = new
                        .pointer("/spec/clusterIP")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty);
                    if empty && let Some(ip) = cur.pointer("/spec/clusterIP").cloned() {
                        new["spec"]["clusterIP"] = ip;
                        new["spec"]["clusterIPs"] = cur
                            .pointer("/spec/clusterIPs")
                            .cloned()
                            .unwrap_or(Value::Null);
                    }
                }
                if !self.info.crd {
                    defaults::apply(&self.info.group, &self.info.plural, &mut new);
                }
            }
        }
        // immutable fields of built-ins (main resource writes only)
        if sub.is_none()
            && !self.info.crd
            && let Some((field, msg)) =
                defaults::immutable_violation(&self.info.group, &self.info.plural, cur, &new)
        {
            return Err(self
                .info
                .invalid(&name, vec![Cause::new("FieldValueInvalid", &field, msg)]));
        }
        // no new finalizers while deleting
        if is_deleting(cur) {
            let old = store::finalizers(cur);
            let added: Vec<String> = store::finalizers(&new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(self.info.invalid(
                    &name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                    )],
                ));
            }
        }
        let mut req = self.admission_request(
            Operation::Update,
            sub,
            ctx,
            &name,
            Some(new),
            Some((**cur).clone()),
        );
        self.run_hooks(&mut req).await?;
        let mut new = req.object.take().unwrap_or(Value::Null);
        self.schema_process(ctx, &mut new, Some(&**cur))?;
        self.validate_meta(&new)?;
        // generation: bumps on changes outside metadata (and status, when it is a subresource)
        if self.info.tracks_generation {
            let skip: &[&str] = if self.info.status {
                &["metadata", "status"]
            } else {
                &["metadata"]
            };
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let generation = if !eq_without(cur, &new, skip) {
                generation + 1
            } else {
                generation
            };
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        req.object = Some(new);
        self.run_validating_hooks(&req).await?;
        let mut new = req.object.take().unwrap_or(Value::Null);
        let fm = ctx.field_manager();
        // no-op writes do not bump resourceVersion
        if same_but_rv_and_managed_fields(cur, &new) {
            return Ok(cur.clone());
        }
        if !fm.is_empty() && !ctx.content_type.contains("apply-patch") {
            patch::record_update(&mut new, &fm, &self.info.api_version(), json!({}));
        }
        self.fault(&name)?;
        if ctx.dry_run() {
            meta_mut(&mut new).insert("resourceVersion".into(), json!(expected_rv.to_string()));
            return Ok(Arc::new(new));
        }
        let out = self
            .shared
            .store
            .update(&self.gr(), self.to_storage(new), Some(expected_rv))?;
        if self
            .shared
            .store
            .get(&self.gr(), &self.key(&name))
            .is_some()
        {
            self.after_write(&out);
        } else {
            self.after_delete(&out);
        }
        Ok(out)
    }

    async fn update(&self, ctx: &mut Ctx, name: &str, sub: Option<&str>) -> ApiResult<Response> {
        let mut body = parse_body(ctx)?;
        if sub == Some("scale") {
            return self.write_scale(ctx, name, Some(body), None).await;
        }
        self.check_type(&mut body)?;
        let body_name = meta_str(&body, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let cur = self.get_obj(name)?;
        let body_rv = meta_str(&body, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        let expected = if body_rv.is_empty() {
            if self.info.crd {
                return Err(self.info.invalid(
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )],
                ));
            }
            rv_of(&cur)
        } else {
            let rv: u64 = body_rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {body_rv}")))?;
            if rv != rv_of(&cur) {
                return Err(ApiError::stale(&self.info.group, &self.info.plural, name));
            }
            rv
        };
        let out = self.finish_update(ctx, sub, &cur, body, expected).await?;
        Ok(self.object_response(ctx, StatusCode::OK, &out, &ctx.warnings))
    }

    async fn patch(&self, ctx: &mut Ctx, name: &str, sub: Option<&str>) -> ApiResult<Response> {
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
                    let mut applied = body.clone();
                    self.check_type(&mut applied)?;
                    if meta_str(&applied, "name").unwrap_or_default() != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            meta_str(&applied, "name").unwrap_or_default()
                        )));
                    }
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
                    let obj = patch::server_side_apply(
                        None,
                        &applied,
                        &fm,
                        true,
                        !self.info.crd,
                        &self.info.api_version(),
                    )?;
                    let out = self.create_obj(ctx, obj).await?;
                    return Ok(self.object_response(ctx, StatusCode::CREATED, &out, &ctx.warnings));
                }
                None => return Err(self.info.not_found(name)),
            };
            let mut new = self.present(&cur);
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
                PatchType::Merge => patch::merge_patch(&mut new, &body)?,
                PatchType::Json => patch::json_patch(&mut new, &body)?,
                PatchType::Strategic => patch::strategic_merge(&mut new, &body)?,
                PatchType::Apply => {
                    let mut applied = body.clone();
                    self.check_type(&mut applied)?;
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
            // a resourceVersion in the patch is a precondition
            let patched_rv = meta_str(&new, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            if !patched_rv.is_empty() && patched_rv != rv_of(&cur).to_string() {
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
                && Some(uid) != meta_str(&cur, "uid")
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

    fn scale_of(&self, obj: &Value) -> Value {
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

    async fn write_scale(
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
            let Some(r) = replicas.as_i64() else {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {replicas}: must be an integer"),
                    )],
                ));
            };
            if r < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {r}: must be greater than or equal to 0"),
                    )],
                ));
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

    fn delete_options(&self, ctx: &Ctx) -> ApiResult<DeleteOpts> {
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

    async fn delete(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
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
                if self.info.crd
                    || matches!(
                        self.info.plural.as_str(),
                        "pods" | "services" | "customresourcedefinitions"
                    )
                {
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

    async fn delete_collection(&self, ctx: &mut Ctx) -> ApiResult<Response> {
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

    async fn bind(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
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

    async fn evict(&self, ctx: &mut Ctx, name: &str) -> ApiResult<Response> {
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

use crate::defaults;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_comparisons_ignore_only_what_they_say() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [1],
                                    "generation": 1},
                       "spec": {"replicas": 1}, "status": {"ready": 0}});
        // resourceVersion and managedFields do not make a change...
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"] = json!([2]);
        assert!(same_but_rv_and_managed_fields(&a, &b));
        meta_mut(&mut b).remove("resourceVersion");
        assert!(same_but_rv_and_managed_fields(&a, &b));
        // ...anything else does, in metadata or outside it.
        let mut c = b.clone();
        c["metadata"]["labels"] = json!({"x": "y"});
        assert!(!same_but_rv_and_managed_fields(&a, &c));
        let mut d = b.clone();
        d["spec"]["replicas"] = json!(2);
        assert!(!same_but_rv_and_managed_fields(&a, &d));
        let mut e = b.clone();
        e.as_object_mut().map(|m| m.remove("status"));
        assert!(!same_but_rv_and_managed_fields(&a, &e));
        // generation: spec changes count, metadata and status do not
        let skip = &["metadata", "status"];
        assert!(eq_without(&a, &c, skip));
        assert!(!eq_without(&a, &d, skip));
        assert!(eq_without(&a, &e, skip), "a removed status is skipped");
        let mut f = a.clone();
        f["extra"] = json!(1);
        assert!(!eq_without(&a, &f, skip), "an added field counts");
        assert!(!eq_without(&f, &a, skip), "a removed field counts");
    }
}
