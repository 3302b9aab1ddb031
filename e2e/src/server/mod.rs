//! The HTTP front: the server, its configuration, and the per-request resource handler
//! [`Api`], whose verbs live in the submodules (one file per verb or group of verbs; see
//! `docs/e2e.md`, "Code layout").

mod admit;
mod create;
mod delete;
mod get;
mod list;
mod patch;
mod pods;
mod route;
mod scale;
mod update;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Request, StatusCode};
use serde_json::{Value, json};

pub(crate) use self::route::{Ctx, json_response};
use crate::admission::AdmissionHook;
use crate::errors::ApiResult;
use crate::faults::Faults;
use crate::registry::{GroupResource, Registry, ResourceInfo};
use crate::store::{self, Store, meta_mut};
use crate::strategy;
use crate::table;

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
    /// Cluster and context name in the kubeconfig `serve_tcp` writes (the user is
    /// `<name>-admin`): servers with different names merge into one kubeconfig.
    pub name: String,
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
            name: "e2e".into(),
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
        let registry = Registry::with_builtins(strategy::Options {
            graceful_pod_deletion: config.graceful_pod_deletion,
        });
        let store = Arc::new(Store::new(
            config.history_limit,
            registry.storage_strategies(),
        ));
        let shared = Arc::new(Shared {
            faults: Faults::new(store.clone()),
            registry,
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
            async move { self::route::handle(shared, req).await }
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

/// Per-request resource handler.
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub info: Arc<ResourceInfo>,
    pub ns: String,
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

    fn sub_allowed(&self, s: &str) -> bool {
        self.info.strategy.allows_subresource(&self.info, s)
    }

    fn get_obj(&self, name: &str) -> ApiResult<Arc<Value>> {
        self.shared
            .store
            .get(&self.gr(), &self.key(name))
            .ok_or_else(|| self.info.not_found(name))
    }

    fn after_write(&self, obj: &Value) {
        self.info.strategy.after_write(&self.shared.registry, obj);
    }

    fn after_delete(&self, obj: &Value) {
        self.info
            .strategy
            .after_delete(&self.shared.registry, &self.shared.store, obj);
    }
}
