//! The two HTTP servers: the scheduler extender (`--port`, 9040) and the REST API
//! (`--api-port`, 9041, also serving `/metrics`). Both run on every replica; without an
//! active plugin (standby, or still recovering) the extender answers with an error, which
//! makes kube-scheduler retry the pod, and the API answers 503.
//!
//! Each scheduling request is handled in a span naming its pod.

use std::{cmp::Ordering, collections::BTreeMap, net::SocketAddr, sync::Arc, time::Instant};

use addon_common::api::galaxy::{POOL_NAMESPACE, Pool, PoolFields};
use addon_common::kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    Error,
    allocator::{Allocation, ip_string, parse_ip},
    extender::{self, BindingArgs, BindingResult, ExtenderArgs, PreemptionArgs},
    key::{AppKind, KeyObj, pool_prefix},
    metrics::Metrics,
    plugin::{Plugin, Slot},
    pod::wants_eni_ip,
};

/// A running HTTP server.
pub struct Server {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Completes when the server stops.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves `router` until `shutdown`.
pub async fn serve(
    what: &str,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> Result<Server, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            server: what.to_owned(),
            address: addr,
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| Error::LocalAddress {
            server: what.to_owned(),
            source,
        })?;
    // Small request/response exchanges on kept-alive connections: as Go's net/http (the
    // original and kube-scheduler), don't let Nagle's algorithm delay the response.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
    });
    let span = tracing::info_span!("server", server = what, address = %local_addr);
    let task = tokio::spawn(
        async move {
            let server = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(error) = server.await {
                tracing::error!(%error, "server failed");
            }
        }
        .instrument(span),
    );
    tracing::info!(address = %local_addr, server = what, "listening");
    Ok(Server { local_addr, task })
}

/// Starts the extender and the REST API servers (on every replica, leading or not).
pub async fn start_servers(
    extender_addr: SocketAddr,
    api_addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> Result<(Server, Server), Error> {
    let ext = serve(
        "extender",
        extender_addr,
        extender_router(state.clone()),
        shutdown.clone(),
    )
    .await?;
    let api = serve("api", api_addr, api_router(state), shutdown).await?;
    Ok((ext, api))
}

/// Shared state of both servers.
#[derive(Clone)]
pub struct ServerState {
    /// The active plugin.
    pub slot: Slot,
    /// Metrics.
    pub metrics: Metrics,
    /// The registry served on the API port's `/metrics`.
    pub registry: Registry,
}

impl ServerState {
    fn plugin(&self) -> Result<Arc<Plugin>, Error> {
        self.slot.get().ok_or(Error::NotLeader)
    }
}

/// The extender router.
pub fn extender_router(state: ServerState) -> Router {
    Router::new()
        .route("/v1/filter", post(filter))
        .route("/v1/priority", post(priority))
        .route("/v1/prioritize", post(priority))
        .route("/v1/bind", post(bind))
        .route("/v1/preempt", post(preempt))
        .route("/healthy", get(|| async { "ok" }))
        .with_state(state)
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn count(state: &ServerState, verb: &str, result: &str) {
    state
        .metrics
        .requests
        .with_label_values(&[verb, result])
        .inc();
}

async fn filter(State(state): State<ServerState>, body: Bytes) -> Response {
    let start = Instant::now();
    let args = match ExtenderArgs::decode(&body) {
        Ok(a) => a,
        Err(e) => {
            count(&state, "filter", "bad_request");
            return json_response(
                StatusCode::BAD_REQUEST,
                &extender::filter_error(&e.to_string()),
            );
        }
    };
    let names = args.nodes.names();
    if !wants_eni_ip(&args.pod) {
        count(&state, "filter", "passthrough");
        return json_response(
            StatusCode::OK,
            &extender::filter_result(&args.nodes, &BTreeMap::new(), ""),
        );
    }
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => {
            count(&state, "filter", "not_leader");
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &extender::filter_error(&e.to_string()),
            );
        }
    };
    let span = request_span("filter", &args.pod.metadata);
    let response = match plugin.filter(&args.pod, &args.nodes).instrument(span).await {
        Ok(out) => {
            count(&state, "filter", "ok");
            let passed = args.nodes.retain(&|n| out.passed.contains(n));
            extender::filter_result(&passed, &out.failed, "")
        }
        Err(e) if e.fails_every_node() => {
            count(&state, "filter", "rejected");
            let failed: BTreeMap<String, String> =
                names.iter().map(|n| (n.clone(), e.to_string())).collect();
            extender::filter_result(&args.nodes.retain(&|_| false), &failed, "")
        }
        Err(e) => {
            count(&state, "filter", "error");
            state
                .metrics
                .errors
                .with_label_values(&[e.metric_label()])
                .inc();
            extender::filter_error(&e.to_string())
        }
    };
    state
        .metrics
        .schedule_latency
        .with_label_values(&["filter"])
        .observe(start.elapsed().as_secs_f64());
    json_response(StatusCode::OK, &response)
}

/// The span of a scheduling request about a pod.
fn request_span(
    verb: &'static str,
    pod: &addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> tracing::Span {
    tracing::info_span!(
        "request",
        verb,
        namespace = pod.namespace.as_deref().unwrap_or_default(),
        name = pod.name.as_deref().unwrap_or_default()
    )
}

async fn priority() -> Response {
    json_response(StatusCode::OK, &json!([]))
}

async fn bind(State(state): State<ServerState>, body: Bytes) -> Response {
    let start = Instant::now();
    let result = match BindingArgs::decode(&body) {
        Err(e) => Err(e),
        Ok(args) => match state.plugin() {
            Err(e) => Err(e),
            Ok(plugin) => {
                let span = tracing::info_span!(
                    "bind",
                    namespace = %args.pod_namespace,
                    name = %args.pod_name,
                    node = %args.node
                );
                plugin
                    .bind(
                        &args.pod_namespace,
                        &args.pod_name,
                        &args.pod_uid,
                        &args.node,
                    )
                    .instrument(span)
                    .await
            }
        },
    };
    state
        .metrics
        .schedule_latency
        .with_label_values(&["bind"])
        .observe(start.elapsed().as_secs_f64());
    let error = match result {
        Ok(()) => {
            count(&state, "bind", "ok");
            String::new()
        }
        Err(e) => {
            count(&state, "bind", e.metric_label());
            state
                .metrics
                .errors
                .with_label_values(&[e.metric_label()])
                .inc();
            tracing::warn!(error = %e, "bind failed");
            e.to_string()
        }
    };
    let body = serde_json::to_value(BindingResult { error }).unwrap_or(Value::Null);
    json_response(StatusCode::OK, &body)
}

async fn preempt(State(state): State<ServerState>, body: Bytes) -> Response {
    let args = match PreemptionArgs::decode(&body) {
        Ok(a) => a,
        Err(e) => {
            count(&state, "preempt", "bad_request");
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()}));
        }
    };
    let nodes: Vec<String> = args.meta_victims.keys().cloned().collect();
    let keep = if wants_eni_ip(&args.pod) {
        match state.plugin() {
            Ok(plugin) => match plugin
                .preempt_nodes(&args.pod, &nodes)
                .instrument(request_span("preempt", &args.pod.metadata))
                .await
            {
                Ok(k) => k,
                Err(e) => {
                    count(&state, "preempt", "error");
                    return json_response(StatusCode::OK, &json!({"error": e.to_string()}));
                }
            },
            Err(e) => {
                count(&state, "preempt", "not_leader");
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"error": e.to_string()}),
                );
            }
        }
    } else {
        nodes.iter().cloned().collect()
    };
    count(&state, "preempt", "ok");
    let victims: serde_json::Map<String, Value> = args
        .meta_victims
        .into_iter()
        .filter(|(n, _)| keep.contains(n))
        .collect();
    json_response(StatusCode::OK, &json!({"nodeNameToMetaVictims": victims}))
}

// ---------------------------------------------------------------------------------------
// REST API

/// The REST API router (`/v1/ip`, `/v1/pool`, `/metrics`).
pub fn api_router(state: ServerState) -> Router {
    Router::new()
        .route("/v1/ip", get(list_ips).post(release_ips))
        .route("/v1/pool", post(create_pool))
        .route("/v1/pool/{name}", get(get_pool).delete(delete_pool))
        .route("/metrics", get(metrics))
        .route("/healthy", get(|| async { "ok" }))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        addon_common::metrics::encode_text(&state.registry),
    )
        .into_response()
}

fn api_error(code: StatusCode, message: impl Into<String>) -> Response {
    json_response(
        code,
        &json!({"code": code.as_u16(), "message": message.into()}),
    )
}

/// `GET /v1/ip` query.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Fuzzy match on the IP or key.
    pub keyword: Option<String>,
    /// Pool name.
    pub pool_name: Option<String>,
    /// App name.
    pub app_name: Option<String>,
    /// Pod name.
    pub pod_name: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// deployment | statefulset | tapp | pod | <kind>; default statefulset when a name or
    /// namespace is given.
    pub app_type: Option<String>,
    /// Page number, from 0.
    pub page: Option<u32>,
    /// Page size (default 10, max 9999).
    pub size: Option<u32>,
    /// `ip|namespace|podname|policy [asc|desc]`.
    pub sort: Option<String>,
}

/// One row of `GET /v1/ip`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FloatingIpItem {
    /// The IP.
    pub ip: String,
    /// Namespace of the owner.
    pub namespace: String,
    /// App name.
    pub app_name: String,
    /// Pod name.
    pub pod_name: String,
    /// Pool name.
    pub pool_name: String,
    /// Release policy (0, 1, 2).
    pub policy: u8,
    /// deployment, statefulset, tapp, pod…
    pub app_type: String,
    /// Last change.
    pub update_time: String,
    /// Running, Deleted, Finished or Unknown.
    pub status: String,
    /// Whether `POST /v1/ip` may release it.
    pub releasable: bool,
}

/// A page of results, Spring-style as Galaxy's API.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The rows.
    pub content: Vec<FloatingIpItem>,
    /// Last page?
    pub last: bool,
    /// Rows in total.
    pub total_elements: usize,
    /// Pages in total.
    pub total_pages: usize,
    /// First page?
    pub first: bool,
    /// Rows on this page.
    pub number_of_elements: usize,
    /// Page size.
    pub size: usize,
    /// Page number.
    pub number: usize,
}

/// Builds the item of an allocation.
pub fn item_of(ip: u32, a: &Allocation, status: String, releasable: bool) -> FloatingIpItem {
    let k = KeyObj::parse(&a.key).ok();
    FloatingIpItem {
        ip: ip_string(ip),
        namespace: k.as_ref().map(|k| k.namespace.clone()).unwrap_or_default(),
        app_name: k.as_ref().map(|k| k.app.clone()).unwrap_or_default(),
        pod_name: k.as_ref().map(|k| k.pod.clone()).unwrap_or_default(),
        pool_name: k.as_ref().and_then(|k| k.pool.clone()).unwrap_or_default(),
        policy: a.policy.as_int(),
        app_type: k
            .as_ref()
            .and_then(|k| k.kind.as_ref())
            .map(AppKind::app_type)
            .unwrap_or_default(),
        update_time: a.update_time.clone(),
        status,
        releasable,
    }
}

/// Filters, sorts and pages rows. Pure.
pub fn page(items: Vec<FloatingIpItem>, q: &ListQuery) -> Result<Page, String> {
    let page_no = q.page.unwrap_or(0);
    if page_no > 99_999 {
        return Err("page must be in [0, 99999]".into());
    }
    let size = q.size.unwrap_or(10);
    if size == 0 || size > 9999 {
        return Err("size must be in [1, 9999]".into());
    }
    let (field, desc) = match q.sort.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => ("ip".to_string(), false),
        Some(s) => {
            let mut it = s.split_whitespace();
            let field = it.next().unwrap_or("ip").to_ascii_lowercase();
            let dir = it.next().unwrap_or("asc").to_ascii_lowercase();
            if !["ip", "namespace", "podname", "policy"].contains(&field.as_str()) {
                return Err(format!(
                    "cannot sort by {field:?}: ip, namespace, podname or policy"
                ));
            }
            if dir != "asc" && dir != "desc" {
                return Err(format!("sort direction {dir:?}: asc or desc"));
            }
            (field, dir == "desc")
        }
    };
    let has_filter = q.pool_name.is_some()
        || q.app_name.is_some()
        || q.pod_name.is_some()
        || q.namespace.is_some()
        || q.app_type.is_some();
    let app_type = q
        .app_type
        .clone()
        .or_else(|| has_filter.then(|| "statefulset".to_string()))
        .map(|t| AppKind::from_app_type(&t).app_type());
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let mut rows: Vec<FloatingIpItem> = items
        .into_iter()
        .filter(|i| match &q.keyword {
            Some(k) if !k.is_empty() => {
                i.ip.contains(k.as_str())
                    || i.pod_name.contains(k.as_str())
                    || i.app_name.contains(k.as_str())
                    || i.namespace.contains(k.as_str())
                    || i.pool_name.contains(k.as_str())
            }
            _ => true,
        })
        .filter(|i| {
            eq(&q.pool_name, &i.pool_name)
                && eq(&q.app_name, &i.app_name)
                && eq(&q.pod_name, &i.pod_name)
                && eq(&q.namespace, &i.namespace)
                && (q.pool_name.is_some()
                    || !has_filter
                    || (i.pool_name.is_empty()
                        && app_type.as_deref().is_none_or(|t| t == i.app_type)))
        })
        .collect();
    let ip_num = |s: &str| parse_ip(s).unwrap_or(0);
    rows.sort_by(|a, b| {
        let o = match field.as_str() {
            "namespace" => a.namespace.cmp(&b.namespace),
            "podname" => a.pod_name.cmp(&b.pod_name),
            "policy" => a.policy.cmp(&b.policy),
            _ => Ordering::Equal,
        }
        .then_with(|| ip_num(&a.ip).cmp(&ip_num(&b.ip)));
        if desc { o.reverse() } else { o }
    });
    let total = rows.len();
    let size = size as usize;
    let total_pages = total.div_ceil(size);
    let number = page_no as usize;
    let content: Vec<FloatingIpItem> = rows.into_iter().skip(number * size).take(size).collect();
    Ok(Page {
        number_of_elements: content.len(),
        content,
        last: number + 1 >= total_pages,
        total_elements: total,
        total_pages,
        first: number == 0,
        size,
        number,
    })
}

async fn list_ips(State(state): State<ServerState>, Query(q): Query<ListQuery>) -> Response {
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let items: Vec<FloatingIpItem> = plugin
        .ipam
        .allocated()
        .into_iter()
        .map(|(ip, a)| item_of(ip, &a, plugin.status_of(&a), plugin.releasable(&a)))
        .collect();
    match page(items, &q) {
        Ok(p) => json_response(
            StatusCode::OK,
            &serde_json::to_value(p).unwrap_or(Value::Null),
        ),
        Err(e) => api_error(StatusCode::BAD_REQUEST, e),
    }
}

/// One IP of `POST /v1/ip`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct ReleaseItem {
    /// The IP.
    pub ip: String,
    /// App name.
    pub app_name: String,
    /// App type.
    pub app_type: String,
    /// Pod name.
    pub pod_name: String,
    /// Namespace.
    pub namespace: String,
    /// Pool name.
    pub pool_name: String,
}

impl ReleaseItem {
    /// The key the item must match.
    pub fn key(&self) -> String {
        let pool = (!self.pool_name.is_empty()).then_some(self.pool_name.as_str());
        if self.app_name.is_empty()
            && self.pod_name.is_empty()
            && let Some(p) = pool
        {
            return pool_prefix(p);
        }
        let kind = AppKind::from_app_type(if self.app_type.is_empty() {
            "statefulset"
        } else {
            &self.app_type
        });
        KeyObj::pod(kind, &self.namespace, &self.app_name, &self.pod_name, pool).key()
    }
}

/// `POST /v1/ip` body.
#[derive(Deserialize, Debug, Default)]
pub struct ReleaseRequest {
    /// The IPs.
    #[serde(default)]
    pub ips: Vec<ReleaseItem>,
}

async fn release_ips(State(state): State<ServerState>, body: Bytes) -> Response {
    let req: ReleaseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut parsed = Vec::new();
    for item in &req.ips {
        match parse_ip(&item.ip) {
            Some(ip) => parsed.push((ip, item)),
            None => return api_error(StatusCode::BAD_REQUEST, format!("bad IP {:?}", item.ip)),
        }
    }
    let mut unreleased = Vec::new();
    let mut reasons = Vec::new();
    for (ip, item) in parsed {
        if let Err(e) = plugin.api_release(ip, &item.key()).await {
            unreleased.push(item.ip.clone());
            reasons.push(e.to_string());
        }
    }
    let code = if unreleased.is_empty() { 200 } else { 202 };
    let message = if unreleased.is_empty() {
        "".to_string()
    } else {
        "Unreleased ips have been released or allocated to other pods, or are not within valid range".to_string()
    };
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        &json!({"code": code, "message": message, "unreleased": unreleased, "reasons": reasons}),
    )
}

/// `POST /v1/pool` body.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct PoolBody {
    /// Name.
    pub name: String,
    /// Size.
    pub size: i64,
    /// Pre-allocate the IPs.
    #[serde(rename = "preAllocateIP")]
    pub pre_allocate_ip: bool,
}

async fn get_pool(State(state): State<ServerState>, Path(name): Path<String>) -> Response {
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let api: Api<Pool> = Api::namespaced(plugin.client().clone(), POOL_NAMESPACE);
    match api.get_opt(&name).await {
        Ok(Some(p)) => json_response(
            StatusCode::OK,
            &json!({"code": 200, "message": "", "pool": {"name": name, "size": p.spec.size, "preAllocateIP": p.spec.pre_allocate_ip}}),
        ),
        Ok(None) => api_error(StatusCode::NOT_FOUND, format!("pool {name} not found")),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn create_pool(State(state): State<ServerState>, body: Bytes) -> Response {
    let body: PoolBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    if body.name.is_empty() || body.name.contains('_') {
        return api_error(
            StatusCode::BAD_REQUEST,
            "name is required and must not contain '_'",
        );
    }
    if body.size < 0 {
        return api_error(StatusCode::BAD_REQUEST, "size must not be negative");
    }
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let api: Api<Pool> = Api::namespaced(plugin.client().clone(), POOL_NAMESPACE);
    let fields = PoolFields {
        size: body.size,
        pre_allocate_ip: body.pre_allocate_ip,
    };
    let result = match api.get_opt(&body.name).await {
        Ok(Some(mut existing)) => {
            existing.spec = fields;
            api.replace(&body.name, &PostParams::default(), &existing)
                .await
                .map(|_| ())
        }
        Ok(None) => {
            let mut pool = Pool::new(&body.name, fields);
            pool.metadata.namespace = Some(POOL_NAMESPACE.into());
            api.create(&PostParams::default(), &pool).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let held = plugin.ipam.by_prefix(&pool_prefix(&body.name)).len();
    let real = if body.pre_allocate_ip {
        match plugin
            .preallocate_pool(&body.name, body.size as usize)
            .await
        {
            Ok(n) => n,
            Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    } else {
        held
    };
    let (code, message) = if body.pre_allocate_ip && (real as i64) < body.size {
        (202, "No enough IPs")
    } else {
        (200, "")
    };
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        &json!({"code": code, "message": message, "realPoolSize": real}),
    )
}

async fn delete_pool(State(state): State<ServerState>, Path(name): Path<String>) -> Response {
    let plugin = match state.plugin() {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let api: Api<Pool> = Api::namespaced(plugin.client().clone(), POOL_NAMESPACE);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => api_error(StatusCode::OK, ""),
        Err(e) if crate::api_code(&e) == Some(404) => {
            api_error(StatusCode::NOT_FOUND, format!("pool {name} not found"))
        }
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use addon_common::api::galaxy::ReleasePolicy;

    fn row(ip: &str, key: &str, policy: ReleasePolicy) -> FloatingIpItem {
        let a = Allocation {
            key: key.into(),
            policy,
            ..Allocation::default()
        };
        item_of(parse_ip(ip).expect("ip"), &a, "Running".into(), false)
    }

    fn rows() -> Vec<FloatingIpItem> {
        vec![
            row("10.0.0.3", "sts_ns1_web_web-1", ReleasePolicy::Immutable),
            row("10.0.0.2", "sts_ns1_web_web-0", ReleasePolicy::Immutable),
            row("10.0.0.10", "dp_ns2_api_api-7d-x", ReleasePolicy::Default),
            row(
                "10.0.0.4",
                "pool__p1_dp_ns2_api_api-7d-y",
                ReleasePolicy::Never,
            ),
            row("10.0.0.5", "dp_ns2_api_", ReleasePolicy::Never),
        ]
    }

    #[test]
    fn list_defaults_sort_and_page() {
        let p = page(rows(), &ListQuery::default()).expect("page");
        let ips: Vec<&str> = p.content.iter().map(|i| i.ip.as_str()).collect();
        assert_eq!(
            ips,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.10"],
            "ip asc, numeric"
        );
        assert!(p.first && p.last);
        assert_eq!(
            (p.total_elements, p.total_pages, p.size, p.number),
            (5, 1, 10, 0)
        );
        let p = page(
            rows(),
            &ListQuery {
                size: Some(2),
                page: Some(1),
                sort: Some("ip desc".into()),
                ..ListQuery::default()
            },
        )
        .expect("page");
        let ips: Vec<&str> = p.content.iter().map(|i| i.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.4", "10.0.0.3"]);
        assert_eq!(
            (p.total_pages, p.first, p.last, p.number_of_elements),
            (3, false, false, 2)
        );
    }

    #[test]
    fn list_filters() {
        let q = ListQuery {
            app_name: Some("web".into()),
            ..ListQuery::default()
        };
        assert_eq!(
            page(rows(), &q).expect("p").total_elements,
            2,
            "appType defaults to statefulset"
        );
        let q = ListQuery {
            app_name: Some("api".into()),
            app_type: Some("deployment".into()),
            ..ListQuery::default()
        };
        let p = page(rows(), &q).expect("p");
        assert_eq!(
            p.total_elements, 2,
            "pod key and app-level key; pool IP excluded"
        );
        let q = ListQuery {
            pool_name: Some("p1".into()),
            ..ListQuery::default()
        };
        assert_eq!(page(rows(), &q).expect("p").content[0].ip, "10.0.0.4");
        let q = ListQuery {
            keyword: Some("web-1".into()),
            ..ListQuery::default()
        };
        assert_eq!(page(rows(), &q).expect("p").total_elements, 1);
        let q = ListQuery {
            sort: Some("policy desc".into()),
            ..ListQuery::default()
        };
        assert_eq!(page(rows(), &q).expect("p").content[0].policy, 2);
        assert!(
            page(
                rows(),
                &ListQuery {
                    sort: Some("color".into()),
                    ..ListQuery::default()
                }
            )
            .is_err()
        );
        assert!(
            page(
                rows(),
                &ListQuery {
                    size: Some(10_000),
                    ..ListQuery::default()
                }
            )
            .is_err()
        );
        assert!(
            page(
                rows(),
                &ListQuery {
                    page: Some(100_000),
                    ..ListQuery::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn item_fields_and_release_keys() {
        let i = row(
            "10.0.0.4",
            "pool__p1_dp_ns2_api_api-7d-y",
            ReleasePolicy::Never,
        );
        assert_eq!(
            serde_json::to_value(&i).expect("json"),
            json!({"ip": "10.0.0.4", "namespace": "ns2", "appName": "api", "podName": "api-7d-y", "poolName": "p1",
                   "policy": 2, "appType": "deployment", "updateTime": "", "status": "Running", "releasable": false})
        );
        let item = |v: Value| {
            serde_json::from_value::<ReleaseItem>(v)
                .expect("item")
                .key()
        };
        assert_eq!(
            item(
                json!({"ip": "x", "appName": "web", "podName": "web-0", "namespace": "ns", "appType": "statefulset"})
            ),
            "sts_ns_web_web-0"
        );
        assert_eq!(
            item(json!({"ip": "x", "appName": "web", "podName": "web-0", "namespace": "ns"})),
            "sts_ns_web_web-0"
        );
        assert_eq!(
            item(json!({"ip": "x", "appName": "api", "namespace": "ns", "appType": "deployment"})),
            "dp_ns_api_"
        );
        assert_eq!(item(json!({"ip": "x", "poolName": "p1"})), "pool__p1_");
        assert_eq!(
            item(
                json!({"ip": "x", "poolName": "p1", "appName": "api", "podName": "api-1", "namespace": "ns", "appType": "deployment"})
            ),
            "pool__p1_dp_ns_api_api-1"
        );
    }
}
