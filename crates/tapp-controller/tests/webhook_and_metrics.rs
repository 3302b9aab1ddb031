//! The admission webhook over real HTTPS with a self-generated certificate, and the metrics
//! exposition checked by `promtool check metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use addon_common::api::tapp::InstanceStatus;
use addon_common::webhook::{ReloadableTls, generate, serve_https, server_config};
use serde_json::{Value, json};
use tapp_controller::metrics::Metrics;
use tapp_controller::webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn post_review(addr: std::net::SocketAddr, ca_pem: &str, body: &Value) -> Value {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
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
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The API server verifies the Service DNS name.
    let name = ServerName::try_from("tapp-controller.kube-system.svc").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the generated CA");
    let payload = body.to_string();
    let request = format!(
        "POST /validate/tapp HTTP/1.1\r\nHost: tapp-controller.kube-system.svc\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json_start = text.find("\r\n\r\n").expect("body") + 4;
    serde_json::from_str(&text[json_start..]).expect("json body")
}

fn review(spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "3a1f", "kind": {"group": "apps.tkestack.io", "version": "v1", "kind": "TApp"},
            "resource": {"group": "apps.tkestack.io", "version": "v1", "resource": "tapps"},
            "name": "example-tapp", "namespace": "default", "operation": "UPDATE", "userInfo": {"username": "kubectl"},
            "object": {"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "metadata": {"name": "example-tapp", "namespace": "default"}, "spec": spec}}
    })
}

#[tokio::test]
async fn webhook_serves_https_with_a_generated_certificate() {
    let bundle = generate("tapp-controller", "kube-system", chrono::Utc::now()).expect("certs");
    let tls = ReloadableTls::new(server_config(&bundle.cert_pem, &bundle.key_pem).expect("tls"));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    let stop = CancellationToken::new();
    let (addr, task) = serve_https(
        "127.0.0.1:0".parse().expect("addr"),
        webhook::router(Some(metrics)),
        tls,
        stop.clone(),
    )
    .await
    .expect("serve");
    let template = json!({"metadata": {"labels": {"app": "example-tapp"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.7.9"}]}});
    let ok = post_review(
        addr,
        &bundle.ca_pem,
        &review(json!({"replicas": 3, "template": template})),
    )
    .await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");
    assert_eq!(ok["response"]["uid"], "3a1f");
    let bad = post_review(
        addr,
        &bundle.ca_pem,
        &review(json!({"replicas": 3, "template": template, "templates": {"1": "test"}, "statuses": {"2": "Pending"}})),
    )
    .await;
    assert_eq!(bad["response"]["allowed"], false, "{bad}");
    let message = bad["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("spec.templates[1]") && message.contains("spec.statuses[2]"),
        "{message}"
    );
    let text = addon_common::metrics::encode_text(&registry);
    assert!(
        text.contains(r#"tapp_controller_webhook_requests_total{result="denied"} 1"#),
        "{text}"
    );
    stop.cancel();
    let _ = task.await;
}

#[test]
fn metrics_pass_promtool() {
    let registry = addon_common::metrics::new_registry().expect("registry");
    let metrics = Metrics::register(&registry).expect("metrics");
    {
        let _m = metrics.reconcile.count_and_measure();
    }
    metrics.reconcile.failure("conflict");
    let statuses = BTreeMap::from([
        ("0".to_string(), InstanceStatus::Running),
        ("1".to_string(), InstanceStatus::Killed),
    ]);
    metrics.set_tapp("default", "example-tapp", &statuses, 1, 2);
    metrics.pod_updates.with_label_values(&["in_place"]).inc();
    let body = addon_common::metrics::encode_text(&registry);
    for family in [
        "tapp_controller_reconcile_total",
        "tapp_controller_reconcile_errors_total",
        "tapp_controller_reconcile_duration_seconds",
        r#"tapp_controller_instances{namespace="default",status="Running",tapp="example-tapp"} 1"#,
        r#"tapp_controller_pod_updates_total{method="in_place"} 1"#,
        "tapp_controller_rollout_updated_instances",
        "tapp_controller_rollout_desired_instances",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    addon_common::testing::assert_promtool_clean(&body, &[]);
    metrics.forget_tapp("default", "example-tapp");
    assert!(!addon_common::metrics::encode_text(&registry).contains("example-tapp"));
}
