//! The event recorder against a recording Events API: series, related objects, names.

use std::sync::{Arc, Mutex};

use addon_common::events::{EventRecorder, EventType};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{patch, post},
};
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};

#[derive(Default)]
struct Api {
    created: Vec<Value>,
    patched: Vec<(String, Value)>,
    missing: bool,
}

type Shared = Arc<Mutex<Api>>;

fn client(shared: &Shared) -> kube::Client {
    let router = Router::new()
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            post(
                |State(s): State<Shared>, Json(body): Json<Value>| async move {
                    s.lock().expect("lock").created.push(body.clone());
                    (StatusCode::CREATED, Json(body))
                },
            ),
        )
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
            patch(
                |State(s): State<Shared>,
                 Path((_ns, name)): Path<(String, String)>,
                 Json(body): Json<Value>| async move {
                    let mut api = s.lock().expect("lock");
                    if api.missing {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found"});
                        return (StatusCode::NOT_FOUND, Json(status));
                    }
                    api.patched.push((name, body.clone()));
                    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                        "metadata": {"name": "x"}, "eventTime": null});
                    (StatusCode::OK, Json(event))
                },
            ),
        )
        .with_state(shared.clone());
    kube::Client::new(router, "default")
}

fn reference(kind: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps.tkestack.io/v1".into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        namespace: Some("ns".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

#[tokio::test]
async fn repeats_fold_into_a_series_and_children_keep_their_own_events() {
    let shared = Shared::default();
    let recorder = EventRecorder::new(client(&shared), "tapp-controller");
    let tapp = reference("TApp", "web");
    let pod = |n: &str| Some(reference("Pod", n));
    for child in ["web-0", "web-1"] {
        recorder
            .publish(
                &tapp,
                pod(child),
                EventType::Normal,
                "SuccessfulCreate",
                "Create",
                format!("Instance: {child}"),
            )
            .await;
    }
    recorder
        .publish(
            &tapp,
            pod("web-0"),
            EventType::Normal,
            "SuccessfulCreate",
            "Create",
            "Instance: web-0".into(),
        )
        .await;
    recorder.warning(&tapp, "FailedSync", "Sync", "bad").await;

    let api = shared.lock().expect("lock");
    assert_eq!(api.created.len(), 3, "{:?}", api.created);
    let first = &api.created[0];
    assert_eq!(first["reason"], "SuccessfulCreate");
    assert_eq!(first["type"], "Normal");
    assert_eq!(first["note"], "Instance: web-0");
    assert_eq!(first["regarding"]["name"], "web");
    assert_eq!(first["related"]["name"], "web-0");
    assert_eq!(first["reportingController"], "tapp-controller");
    assert_eq!(first["metadata"]["namespace"], "ns");
    let name = first["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("web."), "{name}");
    let names: std::collections::BTreeSet<_> = api
        .created
        .iter()
        .map(|e| e["metadata"]["name"].to_string())
        .collect();
    assert_eq!(names.len(), 3, "unique names");
    assert_eq!(api.created[2]["type"], "Warning");
    assert!(api.created[2].get("related").is_none_or(Value::is_null));
    // The repeat about web-0 is a series of the first event.
    assert_eq!(api.patched.len(), 1);
    assert_eq!(api.patched[0].0, name);
    assert_eq!(api.patched[0].1["series"]["count"], 2);
    drop(api);
    assert_eq!(recorder.cached_series(), 3);
}

#[tokio::test]
async fn a_series_whose_event_is_gone_starts_anew() {
    let shared = Shared::default();
    let recorder = EventRecorder::new(client(&shared), "c");
    let obj = reference("TApp", "web");
    recorder.normal(&obj, "Scaled", "Scale", "1").await;
    shared.lock().expect("lock").missing = true;
    recorder.normal(&obj, "Scaled", "Scale", "2").await;
    let api = shared.lock().expect("lock");
    assert_eq!(api.created.len(), 2);
    assert_eq!(api.created[1]["note"], "2");
}
