//! The shared webhook plumbing over real TLS on loopback (certificate swaps, a reloaded cert
//! directory) and the self-managed certificates against a mocked Secret and
//! ValidatingWebhookConfiguration API.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use addon_common::webhook::{
    self, CertBundle, ReloadableTls, SecretCerts, WebhookConfig, bundle_from_secret, secret_of,
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ANNOTATION: &str = "example.io/not-after";

/// GET `/` over HTTPS, trusting only `ca_pem`, for `svc.ns.svc`.
async fn get_root(addr: SocketAddr, ca_pem: &str) -> Result<String, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca")).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("svc.ns.svc").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: svc.ns.svc\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    // A TLS close_notify may be missing on connection close; what was read is enough.
    let _ = tls.read_to_end(&mut response).await;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn bundle() -> CertBundle {
    webhook::generate("svc", "ns", chrono::Utc::now()).expect("certs")
}

#[tokio::test]
async fn serves_https_and_swaps_certificates_without_a_restart() {
    let (a, b) = (bundle(), bundle());
    let tls = ReloadableTls::new(webhook::server_config(&a.cert_pem, &a.key_pem).expect("tls"));
    let stop = CancellationToken::new();
    let router = Router::new().route("/", get(|| async { "hello" }));
    let (addr, task) = webhook::serve_https(
        "127.0.0.1:0".parse().expect("addr"),
        router,
        tls.clone(),
        stop.clone(),
    )
    .await
    .expect("serve");

    let text = get_root(addr, &a.ca_pem).await.expect("request");
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("hello"),
        "{text}"
    );
    assert!(
        get_root(addr, &b.ca_pem).await.is_err(),
        "B's CA must not verify A"
    );

    tls.replace(webhook::server_config(&b.cert_pem, &b.key_pem).expect("tls"));
    let text = get_root(addr, &b.ca_pem)
        .await
        .expect("request after the swap");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(get_root(addr, &a.ca_pem).await.is_err(), "A is gone");

    stop.cancel();
    task.await.expect("accept loop ends");
}

#[tokio::test]
async fn a_certificate_directory_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |b: &CertBundle| {
        std::fs::write(dir.path().join("tls.crt"), &b.cert_pem).expect("crt");
        std::fs::write(dir.path().join("tls.key"), &b.key_pem).expect("key");
    };
    let (a, b) = (bundle(), bundle());
    write(&a);
    let stop = CancellationToken::new();
    let tls = webhook::cert_dir_tls(dir.path(), Duration::from_millis(20), stop.clone())
        .await
        .expect("load");
    let first = tls.current();
    write(&b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::ptr_eq(&first, &tls.current()) {
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Serving proves the new pair is the one in use.
    let router = Router::new().route("/", get(|| async { "ok" }));
    let (addr, task) = webhook::serve_https(
        "127.0.0.1:0".parse().expect("addr"),
        router,
        tls,
        stop.clone(),
    )
    .await
    .expect("serve");
    let text = get_root(addr, &b.ca_pem).await.expect("request");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop.cancel();
    task.await.expect("accept loop ends");
}

// --- a mocked API for SecretCerts ---------------------------------------------------------

#[derive(Default)]
struct Api {
    secret: Option<Value>,
    rv: u64,
    /// The next replace fails with Conflict after storing this (another replica's write).
    race_with: Option<Value>,
    config: Value,
    patches: usize,
}

type Shared = Arc<Mutex<Api>>;

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code});
    (StatusCode::from_u16(code).expect("code"), Json(body)).into_response()
}

fn store(api: &mut Api, mut secret: Value) -> Value {
    api.rv += 1;
    secret["metadata"]["resourceVersion"] = json!(api.rv.to_string());
    secret["metadata"]["namespace"] = json!("ns");
    api.secret = Some(secret.clone());
    secret
}

async fn get_secret(State(s): State<Shared>, Path(_): Path<(String, String)>) -> Response {
    match s.lock().expect("lock").secret.clone() {
        Some(secret) => Json(secret).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn create_secret(
    State(s): State<Shared>,
    Path(_): Path<String>,
    Json(secret): Json<Value>,
) -> Response {
    let mut api = s.lock().expect("lock");
    if api.secret.is_some() {
        return status(409, "AlreadyExists");
    }
    (StatusCode::CREATED, Json(store(&mut api, secret))).into_response()
}

async fn replace_secret(
    State(s): State<Shared>,
    Path(_): Path<(String, String)>,
    Json(secret): Json<Value>,
) -> Response {
    let mut api = s.lock().expect("lock");
    if let Some(other) = api.race_with.take() {
        store(&mut api, other);
        return status(409, "Conflict");
    }
    let current = api
        .secret
        .as_ref()
        .map(|s| s["metadata"]["resourceVersion"].clone());
    if current != Some(secret["metadata"]["resourceVersion"].clone()) {
        return status(409, "Conflict");
    }
    Json(store(&mut api, secret)).into_response()
}

async fn get_config(State(s): State<Shared>, Path(_): Path<String>) -> Response {
    Json(s.lock().expect("lock").config.clone()).into_response()
}

async fn patch_config(State(s): State<Shared>, Path(_): Path<String>, body: Bytes) -> Response {
    let mut api = s.lock().expect("lock");
    let patch: json_patch::Patch = serde_json::from_slice(&body).expect("json patch");
    if json_patch::patch(&mut api.config, &patch).is_err() {
        return status(422, "Invalid");
    }
    api.patches += 1;
    Json(api.config.clone()).into_response()
}

fn certs(shared: &Shared) -> SecretCerts {
    let router = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/secrets",
            axum::routing::post(create_secret),
        )
        .route(
            "/api/v1/namespaces/{ns}/secrets/{name}",
            get(get_secret).put(replace_secret),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
            get(get_config).patch(patch_config),
        )
        .with_state(shared.clone());
    SecretCerts {
        client: kube::Client::new(router, "default"),
        namespace: "ns".into(),
        secret: "svc-cert".into(),
        service: "svc".into(),
        not_after_annotation: ANNOTATION.into(),
        webhook_config: Some(WebhookConfig::Validating("svc".into())),
    }
}

fn stored(shared: &Shared) -> Option<CertBundle> {
    let value = shared.lock().expect("lock").secret.clone()?;
    let secret: Secret = serde_json::from_value(value).expect("secret");
    bundle_from_secret(&secret, ANNOTATION)
}

fn secret_json(b: &CertBundle) -> Value {
    serde_json::to_value(secret_of("svc-cert", b, ANNOTATION, None)).expect("json")
}

#[tokio::test]
async fn replicas_converge_on_one_secret_and_renew_before_expiry() {
    let shared = Shared::default();
    let (one, two) = (certs(&shared), certs(&shared));
    let now = chrono::Utc::now();
    let (a, b) = tokio::join!(one.ensure(now), two.ensure(now));
    let (a, b) = (a.expect("one"), b.expect("two"));
    assert_eq!(a, b, "both replicas serve the same certificate");
    assert_eq!(stored(&shared).as_ref().map(|s| &s.ca_pem), Some(&a.ca_pem));
    assert_eq!(one.ensure(now).await.expect("again").ca_pem, a.ca_pem);

    // 30 days before expiry the certificate is regenerated in place (replace with the rv).
    let later = a.not_after - chrono::Duration::days(webhook::RENEW_BEFORE_DAYS);
    let renewed = one.ensure(later).await.expect("renew");
    assert_ne!(renewed.ca_pem, a.ca_pem);
    assert_eq!(
        stored(&shared).map(|s| s.ca_pem),
        Some(renewed.ca_pem.clone())
    );

    // A replica losing the renewal race adopts the winner's certificate.
    let even_later = renewed.not_after - chrono::Duration::days(1);
    let winner = webhook::generate("svc", "ns", even_later).expect("winner");
    shared.lock().expect("lock").race_with = Some(secret_json(&winner));
    let adopted = two.ensure(even_later).await.expect("adopt");
    assert_eq!(adopted.ca_pem, winner.ca_pem);
}

#[tokio::test]
async fn the_ca_bundle_is_patched_into_our_webhooks_once_and_start_serves_the_secret() {
    let shared = Shared::default();
    shared.lock().expect("lock").config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "svc"},
        "webhooks": [
            {"name": "a.example.io", "clientConfig": {"service": {"name": "svc", "namespace": "ns"}},
             "sideEffects": "None", "admissionReviewVersions": ["v1"]},
            {"name": "b.example.io", "clientConfig": {"service": {"name": "other", "namespace": "ns"}},
             "sideEffects": "None", "admissionReviewVersions": ["v1"]}
        ]
    });
    let certs = certs(&shared);
    let stop = CancellationToken::new();
    let tls = certs.start(stop.clone()).await.expect("start");
    let bundle = stored(&shared).expect("the Secret was created");
    {
        use base64::Engine;
        let api = shared.lock().expect("lock");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bundle.ca_pem);
        assert_eq!(
            api.config["webhooks"][0]["clientConfig"]["caBundle"],
            encoded
        );
        assert!(api.config["webhooks"][1]["clientConfig"]["caBundle"].is_null());
        assert_eq!(api.patches, 1);
    }
    // Up to date: no second patch.
    certs.patch_ca_bundle(&bundle.ca_pem).await.expect("patch");
    assert_eq!(shared.lock().expect("lock").patches, 1);

    let router = Router::new().route("/", get(|| async { "ok" }));
    let (addr, task) = webhook::serve_https(
        "127.0.0.1:0".parse().expect("addr"),
        router,
        tls,
        stop.clone(),
    )
    .await
    .expect("serve");
    let text = get_root(addr, &bundle.ca_pem).await.expect("request");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop.cancel();
    task.await.expect("accept loop ends");
}
