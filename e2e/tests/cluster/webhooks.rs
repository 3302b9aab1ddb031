//! Admission webhooks over HTTPS: mutating + validating round trip, selectors, failurePolicy,
//! caBundle verification, timeouts, sideEffects with dry run, service references.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use e2e::cluster::ClusterConfig;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::*;

#[derive(Default)]
struct Hooks {
    reviews: Mutex<Vec<Value>>,
}

fn allow(uid: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}})
}

async fn mutate(State(h): State<Arc<Hooks>>, Json(review): Json<Value>) -> Json<Value> {
    h.reviews.lock().unwrap().push(review.clone());
    let req = &review["request"];
    let patch = if req["object"]["metadata"]["labels"].is_object() {
        json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}])
    };
    let mut resp = allow(&req["uid"]);
    resp["response"]["patchType"] = json!("JSONPatch");
    resp["response"]["patch"] =
        json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    Json(resp)
}

async fn validate(State(h): State<Arc<Hooks>>, Json(review): Json<Value>) -> Json<Value> {
    h.reviews.lock().unwrap().push(review.clone());
    let req = &review["request"];
    let labels = &req["object"]["metadata"]["labels"];
    if labels["deny"] == "true" {
        return Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": false, "status": {"code": 403, "message": "pods labelled deny are not allowed"}}}),
        );
    }
    if labels["mutated"] != "true" && labels["skip"] != "true" {
        return Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": false, "status": {"message": "not mutated"}}}),
        );
    }
    Json(allow(&req["uid"]))
}

async fn slow(Json(review): Json<Value>) -> Json<Value> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    Json(allow(&review["request"]["uid"]))
}

/// Serves the hooks over HTTPS with a CA generated here; returns (port, CA PEM).
async fn serve_hooks(h: Arc<Hooks>) -> (u16, String) {
    let app = axum::Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/slow", post(slow))
        .with_state(h);
    serve_tls(app, &["hook.default.svc"]).await
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn pod_rules() -> Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_and_validating_webhooks_round_trip() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    let hooks = Arc::new(Hooks::default());
    let (port, ca) = serve_hooks(hooks.clone()).await;
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "mutate"},
        "webhooks": [{"name": "mutate.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": b64(&ca)},
            "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "NotIn", "values": ["true"]}]},
            "rules": pod_rules()}]
    }))
    .unwrap();
    let vwc: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "validate"},
        "webhooks": [{"name": "validate.example.com", "admissionReviewVersions": ["v1", "v1beta1"], "sideEffects": "None", "timeoutSeconds": 5,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": b64(&ca)},
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["other"]}]},
            "rules": pod_rules()}]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &vwc)
        .await
        .unwrap();

    // mutated, then validated (the validator requires the mutation)
    let p = env.create_pod(simple_pod("plain")).await;
    assert_eq!(
        p.metadata
            .labels
            .unwrap_or_default()
            .get("mutated")
            .map(String::as_str),
        Some("true")
    );
    {
        let reviews = hooks.reviews.lock().unwrap();
        let r = &reviews[0];
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["kind"], "AdmissionReview");
        let req = &r["request"];
        assert_eq!(
            req["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(
            req["resource"],
            json!({"group": "", "version": "v1", "resource": "pods"})
        );
        assert_eq!(
            (req["operation"].as_str(), req["namespace"].as_str()),
            (Some("CREATE"), Some("default"))
        );
        assert_eq!(req["object"]["metadata"]["name"], "plain");
        assert!(req["uid"].as_str().is_some_and(|u| !u.is_empty()));
        assert_eq!(
            reviews[1]["request"]["object"]["metadata"]["labels"]["mutated"], "true",
            "validation sees the mutated object"
        );
    }
    // denied with the webhook's message
    let mut denied = simple_pod("denied");
    denied["metadata"]["labels"] = json!({"deny": "true"});
    let err = env
        .pods("default")
        .create(
            &PostParams::default(),
            &serde_json::from_value::<Pod>(denied.clone()).unwrap(),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        "admission webhook \"validate.example.com\" denied the request: pods labelled deny are not allowed"
    );
    // objectSelector: not sent to the mutator
    let mut skipped = simple_pod("skipped");
    skipped["metadata"]["labels"] = json!({"skip": "true"});
    let p = env.create_pod(skipped).await;
    assert!(
        !p.metadata
            .labels
            .unwrap_or_default()
            .contains_key("mutated")
    );
    // namespaceSelector: the validator ignores namespace "other"
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "other", "labels": {"team": "other"}}}))
            .unwrap();
    Api::<Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    denied["metadata"]["namespace"] = json!("other");
    env.create_pod(denied).await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_ca_bundle_timeouts_dry_run_and_services() {
    let env = Env::start(ClusterConfig {
        nodes: vec![],
        scheduler: None,
        ..Default::default()
    })
    .await;
    let hooks = Arc::new(Hooks::default());
    let (port, ca) = serve_hooks(hooks.clone()).await;
    let (_other_port, other_ca) = serve_hooks(Arc::new(Hooks::default())).await;
    let api = Api::<ValidatingWebhookConfiguration>::all(env.client.clone());
    let set = |name: &str, hook: Value| {
        let api = api.clone();
        let name = name.to_string();
        async move {
            if api.get_opt(&name).await.unwrap().is_some() {
                api.delete(&name, &Default::default()).await.unwrap();
            }
            let mut hook = hook;
            hook["name"] = json!(format!("{name}.example.com"));
            hook["admissionReviewVersions"] = json!(["v1"]);
            hook["rules"] = pod_rules();
            let c: ValidatingWebhookConfiguration =
                serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": [hook]}))
                    .unwrap();
            api.create(&PostParams::default(), &c).await.unwrap();
        }
    };
    let try_create = |name: &str, dry: bool| {
        let pods = env.pods("default");
        let mut p = simple_pod(name);
        p["metadata"]["labels"] = json!({"skip": "true"});
        let p: Pod = serde_json::from_value(p).unwrap();
        async move {
            pods.create(
                &PostParams {
                    dry_run: dry,
                    ..Default::default()
                },
                &p,
            )
            .await
        }
    };
    // a certificate signed by another CA: rejected (Fail) ...
    set("wrong-ca", json!({"sideEffects": "None", "failurePolicy": "Fail", "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": b64(&other_ca)}})).await;
    let err = try_create("a", false).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 500);
    assert!(
        s.message
            .contains("failed calling webhook \"wrong-ca.example.com\""),
        "{}",
        s.message
    );
    assert!(
        s.message.to_lowercase().contains("certificate"),
        "{}",
        s.message
    );
    // ... or ignored (Ignore)
    set("wrong-ca", json!({"sideEffects": "None", "failurePolicy": "Ignore", "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": b64(&other_ca)}})).await;
    try_create("b", false).await.unwrap();
    api.delete("wrong-ca", &Default::default()).await.unwrap();
    // timeoutSeconds
    set("slow", json!({"sideEffects": "None", "timeoutSeconds": 1, "clientConfig": {"url": format!("https://127.0.0.1:{port}/slow"), "caBundle": b64(&ca)}})).await;
    let err = try_create("c", false).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    api.delete("slow", &Default::default()).await.unwrap();
    // sideEffects: Unknown refuses dry-run requests; None is called with dryRun=true
    set("effects", json!({"sideEffects": "Unknown", "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": b64(&ca)}})).await;
    let err = try_create("d", true).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 400, "{}", s.message);
    set("effects", json!({"sideEffects": "NoneOnDryRun", "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": b64(&ca)}})).await;
    try_create("d", true).await.unwrap();
    assert_eq!(
        hooks.reviews.lock().unwrap().last().unwrap()["request"]["dryRun"],
        true
    );
    api.delete("effects", &Default::default()).await.unwrap();
    // a service reference resolves through the Service's Endpoints; the certificate is checked for hook.default.svc
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "hook", "namespace": "default"}, "spec": {"ports": [{"port": 443, "targetPort": port}]}})).unwrap();
    Api::<Service>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "hook", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": port}]}]})).unwrap();
    Api::<Endpoints>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &ep)
        .await
        .unwrap();
    set("svc", json!({"sideEffects": "None", "clientConfig": {"service": {"namespace": "default", "name": "hook", "path": "/validate"}, "caBundle": b64(&ca)}})).await;
    let before = hooks.reviews.lock().unwrap().len();
    try_create("e", false).await.unwrap();
    assert_eq!(hooks.reviews.lock().unwrap().len(), before + 1);
    env.cluster.shutdown().await;
}
