//! Admission webhooks: an [`AdmissionHook`] for the emulated API server that calls the
//! webhooks of MutatingWebhookConfiguration and ValidatingWebhookConfiguration objects on
//! matching requests, as kube-apiserver does: rules (groups/versions/resources incl.
//! subresources, operations, scope), namespaceSelector, objectSelector, `admission.k8s.io/v1`
//! AdmissionReview over HTTPS verified against `caBundle`, `url` or `service` client configs
//! (a service resolves through its Endpoints), JSONPatch responses applied in order,
//! `failurePolicy`, `timeoutSeconds` and `sideEffects` (dry-run requests).
//!
//! Configurations are read from the server's storage at each request (the dispatcher is part
//! of the API server, like kube-apiserver's admission chain), so a new configuration applies
//! to the very next request.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::admission::{AdmissionHook, AdmissionRequest, Operation};
use crate::cluster::http;
use crate::errors::{ApiError, ApiResult};
use crate::registry::GroupResource;
use crate::server::ApiServer;

/// The webhook dispatcher. Register with [`ApiServer::add_admission_hook`].
pub struct WebhookDispatcher {
    server: ApiServer,
}

impl WebhookDispatcher {
    /// A dispatcher reading configurations from `server`.
    pub fn new(server: ApiServer) -> Self {
        WebhookDispatcher { server }
    }

    /// Creates the dispatcher and registers it with the server.
    pub fn install(server: &ApiServer) {
        server.add_admission_hook(std::sync::Arc::new(WebhookDispatcher::new(server.clone())));
    }

    fn configs(&self, plural: &str) -> Vec<Value> {
        let (mut items, _) = self.server.store().list(
            &GroupResource::new("admissionregistration.k8s.io", plural),
            None,
        );
        items.sort_by(|a, b| {
            a.pointer("/metadata/name")
                .and_then(Value::as_str)
                .cmp(&b.pointer("/metadata/name").and_then(Value::as_str))
        });
        items
            .iter()
            .flat_map(|c| {
                c.get("webhooks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.server
            .store()
            .get(
                &GroupResource::new("", "namespaces"),
                &(String::new(), ns.to_string()),
            )
            .and_then(|n| n.pointer("/metadata/labels").cloned())
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default()
    }

    fn matches(&self, hook: &Value, req: &AdmissionRequest) -> bool {
        if !rules_match(hook.get("rules"), req) {
            return false;
        }
        // namespaceSelector: the namespace of namespaced objects, or the Namespace itself
        if let Some(sel) = hook.get("namespaceSelector").filter(|s| !s.is_null()) {
            let labels = if req.resource.group.is_empty() && req.resource.plural == "namespaces" {
                object_labels(req.object.as_ref().or(req.old_object.as_ref()))
            } else if req.resource.namespaced {
                self.namespace_labels(&req.namespace)
            } else {
                return objsel(hook, req);
            };
            if !label_selector_matches(sel, &labels) {
                return false;
            }
        }
        objsel(hook, req)
    }

    async fn call(
        &self,
        hook: &Value,
        req: &AdmissionRequest,
        object: Option<&Value>,
    ) -> Result<Value, String> {
        let cc = hook.get("clientConfig").cloned().unwrap_or(json!({}));
        let ca = cc
            .get("caBundle")
            .and_then(Value::as_str)
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()))
            .transpose()
            .map_err(|e| format!("caBundle: {e}"))?;
        let (url, connect) = if let Some(u) = cc.get("url").and_then(Value::as_str) {
            (u.to_string(), None)
        } else if let Some(svc) = cc.get("service") {
            self.resolve_service(svc)?
        } else {
            return Err("clientConfig has neither url nor service".into());
        };
        let tls = match ca {
            Some(pem) => Some(http::tls_config(&pem).map_err(|e| e.to_string())?),
            None if url.starts_with("https://") => {
                return Err("no caBundle to verify the webhook's certificate".into());
            }
            None => None,
        };
        let timeout = Duration::from_secs(
            hook.get("timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .clamp(1, 30),
        );
        let versions: Vec<&str> = hook
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let version = if versions.contains(&"v1") || versions.is_empty() {
            "admission.k8s.io/v1"
        } else if versions.contains(&"v1beta1") {
            "admission.k8s.io/v1beta1"
        } else {
            return Err(format!(
                "webhook does not accept v1 or v1beta1 AdmissionReview (accepts {versions:?})"
            ));
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let review = review_request(version, &uid, req, object);
        let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
        let (code, resp) = http::post_json_via(&url, connect, body, tls, timeout)
            .await
            .map_err(|e| format!("Post {url:?}: {e}"))?;
        if code != 200 {
            return Err(format!("Post {url:?}: status {code}"));
        }
        let v: Value =
            serde_json::from_slice(&resp).map_err(|e| format!("decoding AdmissionReview: {e}"))?;
        let response = v
            .get("response")
            .cloned()
            .ok_or("AdmissionReview has no response")?;
        if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return Err(format!(
                "expected response.uid={uid:?}, got {:?}",
                response.get("uid")
            ));
        }
        Ok(response)
    }

    fn resolve_service(&self, svc: &Value) -> Result<(String, Option<(String, u16)>), String> {
        let ns = svc
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let name = svc.get("name").and_then(Value::as_str).unwrap_or_default();
        let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
        let path = svc.get("path").and_then(Value::as_str).unwrap_or("/");
        let url = format!("https://{name}.{ns}.svc:{port}{path}");
        let store = self.server.store();
        let key = (ns.to_string(), name.to_string());
        let service = store
            .get(&GroupResource::new("", "services"), &key)
            .ok_or_else(|| format!("service \"{ns}/{name}\" not found"))?;
        let sport = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("port").and_then(Value::as_u64) == Some(port))
                    .cloned()
            });
        let target = sport
            .as_ref()
            .and_then(|p| p.get("targetPort"))
            .and_then(Value::as_u64)
            .unwrap_or(port);
        let ep = store
            .get(&GroupResource::new("", "endpoints"), &key)
            .ok_or_else(|| format!("service \"{ns}/{name}\" has no endpoints"))?;
        let subset = ep
            .pointer("/subsets/0")
            .ok_or_else(|| format!("service \"{ns}/{name}\" has no ready endpoints"))?;
        let ip = subset
            .pointer("/addresses/0/ip")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("service \"{ns}/{name}\" has no ready endpoints"))?;
        let eport = subset
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ps| ps.first())
            .and_then(|p| p.get("port"))
            .and_then(Value::as_u64)
            .unwrap_or(target);
        Ok((
            url,
            Some((ip.to_string(), u16::try_from(eport).unwrap_or(443))),
        ))
    }

    /// Runs one webhook; returns the (possibly patched) object or an error to return.
    async fn run_one(
        &self,
        hook: &Value,
        req: &AdmissionRequest,
        object: Option<Value>,
        mutating: bool,
    ) -> ApiResult<Option<Value>> {
        let name = hook
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let side_effects = hook
            .get("sideEffects")
            .and_then(Value::as_str)
            .unwrap_or("Unknown");
        if req.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("admission webhook {name:?} has side effects and does not support dry run"),
            ));
        }
        let fail_open = hook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
        let response = match self.call(hook, req, object.as_ref()).await {
            Ok(r) => r,
            Err(e) if fail_open => {
                tracing::warn!(webhook = %name, error = %e, "failed calling webhook, failing open");
                return Ok(object);
            }
            Err(e) => {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    format!("Internal error occurred: failed calling webhook {name:?}: {e}"),
                ));
            }
        };
        if response.get("allowed").and_then(Value::as_bool) != Some(true) {
            let st = response.get("status").cloned().unwrap_or(json!({}));
            let msg = st
                .get("message")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty());
            let reason = st
                .get("reason")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty());
            let denied = format!("admission webhook {name:?} denied the request");
            let message = match (msg, reason) {
                (Some(m), _) => format!("{denied}: {m}"),
                (None, Some(r)) => format!("{denied}: {r}"),
                _ => format!("{denied} without explanation"),
            };
            let code = st
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c >= 400)
                .unwrap_or(403);
            let reason = reason.unwrap_or(if code == 403 {
                "Forbidden"
            } else {
                "BadRequest"
            });
            return Err(ApiError::new(code, reason, message));
        }
        let Some(patch) = response
            .get("patch")
            .and_then(Value::as_str)
            .filter(|_| mutating)
        else {
            return Ok(object);
        };
        let pt = response
            .get("patchType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if pt != "JSONPatch" {
            return Err(ApiError::new(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: admission webhook {name:?}: unsupported patchType {pt:?}"
                ),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .map_err(|e| {
                ApiError::new(
                    500,
                    "InternalError",
                    format!("admission webhook {name:?}: patch: {e}"),
                )
            })?;
        let p: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("admission webhook {name:?}: patch: {e}"),
            )
        })?;
        let mut obj = object.unwrap_or(Value::Null);
        json_patch::patch(&mut obj, &p).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("Internal error occurred: admission webhook {name:?}: applying patch: {e}"),
            )
        })?;
        Ok(Some(obj))
    }
}

fn object_labels(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default()
}

fn objsel(hook: &Value, req: &AdmissionRequest) -> bool {
    match hook.get("objectSelector").filter(|s| !s.is_null()) {
        None => true,
        Some(sel) => [req.object.as_ref(), req.old_object.as_ref()]
            .into_iter()
            .flatten()
            .any(|o| label_selector_matches(sel, &object_labels(Some(o)))),
    }
}

/// A LabelSelector (JSON) against labels.
pub fn label_selector_matches(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    match serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
        sel.clone(),
    ) {
        Ok(s) => crate::cluster::util::selector_matches(&s, labels),
        Err(_) => false,
    }
}

fn list_has(v: Option<&Value>, want: &str) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .any(|x| x == "*" || x == want)
    })
}

/// Whether the webhook's `rules` match the request (upstream `RuleMatcher`).
pub fn rules_match(rules: Option<&Value>, req: &AdmissionRequest) -> bool {
    let Some(rules) = rules.and_then(Value::as_array) else {
        return false;
    };
    let op = req.operation.as_str();
    let res = &req.resource;
    rules.iter().any(|r| {
        let ops_ok = list_has(r.get("operations"), op);
        let groups_ok = list_has(r.get("apiGroups"), &res.group);
        let versions_ok = list_has(r.get("apiVersions"), &res.version);
        let resources_ok = r
            .get("resources")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().filter_map(Value::as_str).any(|pat| {
                    let (pr, ps) = pat
                        .split_once('/')
                        .map_or((pat, None), |(a, b)| (a, Some(b)));
                    let res_ok = pr == "*" || pr == res.plural;
                    let sub_ok = match (ps, req.subresource.as_deref()) {
                        (None, None) => true,
                        (None, Some(_)) => false,
                        (Some("*"), _) => true,
                        (Some(s), Some(sub)) => s == sub,
                        (Some(_), None) => false,
                    };
                    res_ok && sub_ok
                })
            });
        let scope_ok = match r.get("scope").and_then(Value::as_str).unwrap_or("*") {
            "Cluster" => !res.namespaced,
            "Namespaced" => res.namespaced,
            _ => true,
        };
        ops_ok && groups_ok && versions_ok && resources_ok && scope_ok
    })
}

/// The AdmissionReview request body.
pub fn review_request(
    api_version: &str,
    uid: &str,
    req: &AdmissionRequest,
    object: Option<&Value>,
) -> Value {
    let res = &req.resource;
    let options_kind = match req.operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
        Operation::Connect => "CreateOptions",
    };
    let (kind_group, kind_version, kind) = match req.subresource.as_deref() {
        Some("binding") => (String::new(), "v1".to_string(), "Binding".to_string()),
        Some("eviction") => ("policy".into(), "v1".into(), "Eviction".into()),
        Some("scale") => ("autoscaling".into(), "v1".into(), "Scale".into()),
        _ => (res.group.clone(), res.version.clone(), res.kind.clone()),
    };
    let mut r = json!({
        "uid": uid,
        "kind": {"group": kind_group, "version": kind_version, "kind": kind},
        "resource": {"group": res.group, "version": res.version, "resource": res.plural},
        "requestKind": {"group": kind_group, "version": kind_version, "kind": kind},
        "requestResource": {"group": res.group, "version": res.version, "resource": res.plural},
        "name": req.name,
        "operation": req.operation.as_str(),
        "userInfo": {"username": req.user, "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": req.old_object,
        "dryRun": req.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    });
    if !req.namespace.is_empty() {
        r["namespace"] = json!(req.namespace);
    }
    if let Some(s) = &req.subresource {
        r["subResource"] = json!(s);
        r["requestSubResource"] = json!(s);
    }
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": r})
}

fn skip(req: &AdmissionRequest) -> bool {
    // kube-apiserver never sends webhook configurations themselves to webhooks
    req.resource.group == "admissionregistration.k8s.io"
}

impl AdmissionHook for WebhookDispatcher {
    fn mutate<'a>(&'a self, req: &'a mut AdmissionRequest) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if skip(req) {
                return Ok(());
            }
            for hook in self.configs("mutatingwebhookconfigurations") {
                if !self.matches(&hook, req) {
                    continue;
                }
                let obj = req.object.clone();
                let out = self.run_one(&hook, req, obj, true).await?;
                if req.object.is_some() {
                    req.object = out;
                }
            }
            Ok(())
        })
    }

    fn validate<'a>(&'a self, req: &'a AdmissionRequest) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if skip(req) {
                return Ok(());
            }
            for hook in self.configs("validatingwebhookconfigurations") {
                if self.matches(&hook, req) {
                    self.run_one(&hook, req, req.object.clone(), false).await?;
                }
            }
            Ok(())
        })
    }
}
