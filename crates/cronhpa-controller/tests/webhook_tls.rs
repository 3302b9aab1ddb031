//! The admission webhook over real TLS on loopback, and the metrics exposition checked by
//! promtool.

use std::sync::Arc;

use addon_common::webhook::{CERT_DIR_POLL, cert_dir_tls, serve_https};
use chrono_tz::Tz;
use cronhpa_controller::{metrics::Metrics, webhook};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn admission_review(schedule: &str) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0b2891-916f-4ed6-b7cd-27bff1815a8c",
            "kind": {"group": "extensions.tkestack.io", "version": "v1", "kind": "CronHPA"},
            "resource": {"group": "extensions.tkestack.io", "version": "v1", "resource": "cronhpas"},
            "name": "example-cron-hpa", "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
                "metadata": {"name": "example-cron-hpa", "namespace": "default"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-deployment"},
                    "crons": [{"schedule": "0 20 * * 5", "targetReplicas": 60},
                              {"schedule": schedule, "targetReplicas": 30}]
                }
            },
            "dryRun": false
        }
    })
    .to_string()
}

async fn post(
    address: std::net::SocketAddr,
    ca: CertificateDer<'static>,
    body: &str,
) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = ServerName::try_from("cronhpa-controller.kube-system.svc").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: cronhpa-controller.kube-system.svc\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        webhook::PATH,
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    // A TLS close_notify may be missing on connection close; what was read is enough.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    serde_json::from_str(body).expect("json body")
}

#[tokio::test]
async fn webhook_serves_admission_reviews_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["cronhpa-controller.kube-system.svc".to_owned()])
            .expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), certified.cert.pem()).expect("crt");
    std::fs::write(
        dir.path().join("tls.key"),
        certified.signing_key.serialize_pem(),
    )
    .expect("key");
    let registry = addon_common::metrics::new_registry().expect("registry");
    let metrics = Metrics::register(&registry).expect("metrics");
    let stop = CancellationToken::new();
    // What main does: the mounted certificate directory, reloaded on change.
    let tls = cert_dir_tls(dir.path(), CERT_DIR_POLL, stop.clone())
        .await
        .expect("tls config");
    let (address, task) = serve_https(
        "127.0.0.1:0".parse().expect("addr"),
        webhook::router(Tz::UTC, Some(metrics.webhook.clone())),
        tls,
        stop.clone(),
    )
    .await
    .expect("serve");
    let ca = certified.cert.der().clone();

    let review = post(address, ca.clone(), &admission_review("0 23 * * 7")).await;
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "7f0b2891-916f-4ed6-b7cd-27bff1815a8c"
    );
    assert_eq!(review["response"]["allowed"], true);

    let review = post(address, ca, &admission_review("0 23 * * 8")).await;
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(r#"spec.crons[1].schedule: invalid schedule "0 23 * * 8""#),
        "{review}"
    );

    // Both answers are counted.
    use addon_common::webhook::Outcome;
    assert_eq!(metrics.webhook.count(Outcome::Allowed), 1);
    assert_eq!(metrics.webhook.count(Outcome::Denied), 1);

    stop.cancel();
    task.await.expect("server task");
}

#[test]
fn metrics_pass_promtool() {
    let registry = addon_common::metrics::new_registry().expect("registry");
    let metrics = Metrics::register(&registry).expect("metrics");
    metrics.set_state("default/a", "ready");
    metrics.lag.observe(0.2);
    metrics.reconcile.failure("get_scale");
    let text = addon_common::metrics::encode_text(&registry);
    addon_common::testing::assert_promtool_clean(&text, &[]);
}
