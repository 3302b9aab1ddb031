//! `Writer` against a recording API: every write asks for metadata only, and both answers
//! (metadata only, or the whole object from a server that cannot transform) decode.

use std::sync::{Arc, Mutex};

use addon_common::writes::{METADATA_ONLY, Writer};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header::ACCEPT},
    routing::{patch, post},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    accept: Vec<String>,
    /// Answer with the whole object, as a server without the transformation does.
    whole: bool,
}

type Shared = Arc<Mutex<Seen>>;

fn answer(s: &Shared, headers: &HeaderMap, rv: &str) -> Json<Value> {
    let mut seen = s.lock().expect("lock");
    seen.accept.push(
        headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    );
    let metadata = json!({"name": "c", "namespace": "ns", "resourceVersion": rv});
    Json(if seen.whole {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}})
    } else {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
    })
}

fn client(shared: &Shared) -> kube::Client {
    let router = Router::new()
        .route(
            "/api/v1/namespaces/ns/configmaps",
            post(|State(s): State<Shared>, headers: HeaderMap| async move {
                (StatusCode::CREATED, answer(&s, &headers, "1"))
            }),
        )
        .route(
            "/api/v1/namespaces/ns/configmaps/c",
            patch(|State(s): State<Shared>, headers: HeaderMap| async move {
                answer(&s, &headers, "2")
            }),
        )
        .route(
            "/api/v1/namespaces/ns/configmaps/c/status",
            patch(|State(s): State<Shared>, headers: HeaderMap| async move {
                answer(&s, &headers, "3")
            }),
        )
        .with_state(shared.clone());
    kube::Client::new(router, "default")
}

#[tokio::test]
async fn every_write_asks_for_metadata_only_and_either_answer_decodes() {
    let shared = Shared::default();
    let writer: Writer<ConfigMap> = Writer::namespaced(client(&shared), "ns");
    let merge = Patch::Merge(json!({"data": {"k": "w"}}));
    for whole in [false, true] {
        shared.lock().expect("lock").whole = whole;
        let created = writer
            .create(&PostParams::default(), &json!({"metadata": {"name": "c"}}))
            .await
            .expect("create");
        assert_eq!(created.resource_version(), Some("1"));
        let patched = writer
            .patch("c", &PatchParams::default(), &merge)
            .await
            .expect("patch");
        assert_eq!(patched.resource_version(), Some("2"));
        let status = writer
            .patch_subresource("status", "c", &PatchParams::default(), &merge)
            .await
            .expect("status patch");
        assert_eq!(status.resource_version(), Some("3"));
    }
    let seen = shared.lock().expect("lock");
    assert_eq!(seen.accept.len(), 6);
    assert!(
        seen.accept.iter().all(|a| a == METADATA_ONLY),
        "{:?}",
        seen.accept
    );
}
