//! The admin server over a real socket: `/metrics` passes `promtool check metrics`,
//! `/healthz` is always ok, `/readyz` follows the readiness checks.

use std::time::Duration;

use addon_common::{
    admin::{Health, Leadership, serve},
    metrics::{ReconcileMetrics, new_registry},
    testing::assert_promtool_clean,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

#[tokio::test]
async fn metrics_pass_promtool_and_probes_follow_health() {
    let registry = new_registry().expect("registry");
    let metrics = ReconcileMetrics::register(&registry, "tapp").expect("metrics");
    {
        let _m = metrics.count_and_measure();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    metrics.failure("kube");
    let health = Health::default();
    health.set("caches", false, "waiting for tapps to sync");
    health.set_leadership(Leadership::Leader);
    let stop = CancellationToken::new();
    let server = serve(
        "127.0.0.1:0".parse().expect("addr"),
        registry,
        health.clone(),
        stop.clone(),
    )
    .await
    .expect("serve");
    let addr = server.local_addr;

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for family in [
        "tapp_reconcile_total",
        "tapp_reconcile_errors_total",
        "tapp_reconcile_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    assert_promtool_clean(&body, &[]);

    let (code, body) = get(addr, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]caches failed"), "{body}");
    assert!(body.contains("leader-election: leader"), "{body}");
    health.set("caches", true, "synced");
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("admin server stops on cancel")
        .expect("no panic");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "socket closed"
    );
}

#[test]
#[should_panic(expected = "promtool check metrics")]
fn promtool_check_catches_a_bad_exposition() {
    // A counter without `_total` and without HELP: promtool must flag it, so the checks above
    // would fail if the text format regressed.
    assert_promtool_clean("# TYPE requests counter\nrequests 1\n", &[]);
}
