//! A small in-memory API server (an axum Router) emulating the endpoints galaxy-ipam uses:
//! get/list/create/merge-patch/replace/delete of any resource, and `pods/{name}/binding`.
//! No watches: tests call recovery and resync directly.

#![allow(dead_code)]

use addon_common::kube;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// (group-version path, plural, namespace, name)
type Key = (String, String, String, String);

#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    /// Make the next N creates of this plural fail with 500.
    pub fail_creates: BTreeMap<String, usize>,
    /// Answer creates of this plural only after this long (a slow API server).
    pub slow_creates: BTreeMap<String, std::time::Duration>,
}

pub type Shared = Arc<Mutex<Store>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).expect("code"), axum::Json(body)).into_response()
}

struct Target {
    gv: String,
    plural: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn classify(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (gv, rest) = match *segs.first()? {
        "api" => (format!("api/{}", segs.get(1)?), &segs[2..]),
        "apis" => (
            format!("apis/{}/{}", segs.get(1)?, segs.get(2)?),
            &segs[3..],
        ),
        _ => return None,
    };
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Target {
        gv,
        plural: rest.first()?.to_string(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

impl Store {
    pub fn put(&mut self, gv: &str, plural: &str, ns: &str, mut obj: Value) {
        self.rv += 1;
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["metadata"].get("uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("uid-{}-{}", name, self.rv));
        }
        if !ns.is_empty() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        self.objects
            .insert((gv.into(), plural.into(), ns.into(), name), obj);
    }

    pub fn get(&self, gv: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(gv.into(), plural.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn remove(&mut self, gv: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .remove(&(gv.into(), plural.into(), ns.into(), name.into()))
    }

    pub fn list(&self, gv: &str, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, _, _), _)| g == gv && p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn fips(&self) -> BTreeMap<String, Value> {
        self.list("apis/galaxy.k8s.io/v1alpha1", "floatingips")
            .into_iter()
            .map(|f| (f["metadata"]["name"].as_str().expect("name").to_string(), f))
            .collect()
    }
}

async fn handle(State(shared): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let Some(t) = classify(uri.path()) else {
        return status(404, "NotFound", "unknown path");
    };
    let delay = (method == Method::POST && t.name.is_none())
        .then(|| {
            shared
                .lock()
                .expect("lock")
                .slow_creates
                .get(&t.plural)
                .copied()
        })
        .flatten();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut s = shared.lock().expect("lock");
    let ns = t.ns.clone().unwrap_or_default();
    match (method, t.name.clone(), t.sub.as_deref()) {
        (Method::GET, None, _) => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((g, p, n, _), _)| {
                    *g == t.gv && *p == t.plural && (t.ns.is_none() || *n == ns)
                })
                .map(|(_, v)| v.clone())
                .collect();
            axum::Json(json!({"kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}))
            .into_response()
        }
        (Method::GET, Some(name), None) => match s.get(&t.gv, &t.plural, &ns, &name) {
            Some(o) => axum::Json(o).into_response(),
            None => status(404, "NotFound", &format!("{} {name} not found", t.plural)),
        },
        (Method::POST, Some(name), Some("binding")) => {
            let binding: Value = serde_json::from_slice(&body).expect("binding json");
            let Some(mut pod) = s.get(&t.gv, "pods", &ns, &name) else {
                return status(404, "NotFound", &format!("pods {name} not found"));
            };
            if pod["spec"]
                .get("nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                return status(409, "Conflict", "pod already bound");
            }
            pod["spec"]["nodeName"] = binding["target"]["name"].clone();
            if let Some(ann) = binding["metadata"]["annotations"].as_object() {
                for (k, v) in ann {
                    pod["metadata"]["annotations"][k] = v.clone();
                }
            }
            s.put(&t.gv, "pods", &ns, pod);
            (
                StatusCode::CREATED,
                axum::Json(
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}),
                ),
            )
                .into_response()
        }
        (Method::POST, None, _) => {
            if let Some(n) = s.fail_creates.get_mut(&t.plural)
                && *n > 0
            {
                *n -= 1;
                return status(500, "InternalError", "injected failure");
            }
            let mut obj: Value = serde_json::from_slice(&body).expect("json");
            let name = obj["metadata"]["name"].as_str().expect("name").to_string();
            if s.get(&t.gv, &t.plural, &ns, &name).is_some() {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} {name} already exists", t.plural),
                );
            }
            obj["metadata"]["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
            s.put(&t.gv, &t.plural, &ns, obj);
            let created = s.get(&t.gv, &t.plural, &ns, &name).expect("stored");
            (StatusCode::CREATED, axum::Json(created)).into_response()
        }
        (Method::PATCH, Some(name), None) => {
            let Some(mut obj) = s.get(&t.gv, &t.plural, &ns, &name) else {
                return status(404, "NotFound", &format!("{} {name} not found", t.plural));
            };
            let patch: Value = serde_json::from_slice(&body).expect("json");
            json_patch::merge(&mut obj, &patch);
            s.put(&t.gv, &t.plural, &ns, obj);
            axum::Json(s.get(&t.gv, &t.plural, &ns, &name).expect("stored")).into_response()
        }
        (Method::PUT, Some(name), None) => {
            if s.get(&t.gv, &t.plural, &ns, &name).is_none() {
                return status(404, "NotFound", "not found");
            }
            let obj: Value = serde_json::from_slice(&body).expect("json");
            s.put(&t.gv, &t.plural, &ns, obj);
            axum::Json(s.get(&t.gv, &t.plural, &ns, &name).expect("stored")).into_response()
        }
        (Method::DELETE, Some(name), None) => match s.remove(&t.gv, &t.plural, &ns, &name) {
            Some(o) => axum::Json(o).into_response(),
            None => status(404, "NotFound", &format!("{} {name} not found", t.plural)),
        },
        _ => status(405, "MethodNotAllowed", "unsupported"),
    }
}

pub fn client(shared: &Shared) -> kube::Client {
    let router = Router::new().fallback(handle).with_state(shared.clone());
    kube::Client::new(router, "default")
}

// ---- fixtures ------------------------------------------------------------------------

pub const SEED_FLOATINGIPS: &str = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.200~192.168.64.251"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"}]"#;

pub fn configmap(floatingips: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "floatingip-config", "namespace": "kube-system"},
           "data": {"floatingips": floatingips}})
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

pub fn deployment(name: &str, replicas: i32, updated: i32, max_surge: Option<&str>) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": updated}});
    if let Some(s) = max_surge {
        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": s, "maxUnavailable": 0}});
    }
    d
}

pub fn statefulset(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

/// A pod requesting eni-ip (the seed's resources), owned by `owner` = (kind, name).
pub fn pod(name: &str, owner: Option<(&str, &str)>, policy: Option<&str>, uid: &str) -> Value {
    let mut annotations = json!({"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"});
    if let Some(p) = policy {
        annotations["k8s.v1.cni.galaxy.io/release-policy"] = json!(p);
    }
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "annotations": annotations},
        "spec": {"containers": [{"name": "nnn", "image": "nginx", "resources": {
            "limits": {"cpu": "500m", "memory": "1Gi", "tke.cloud.tencent.com/eni-ip": "1"},
            "requests": {"cpu": "250m", "memory": "256Mi", "tke.cloud.tencent.com/eni-ip": "1"}}}]},
        "status": {"phase": "Pending"}});
    if let Some((kind, owner)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o", "controller": true}]);
    }
    p
}
