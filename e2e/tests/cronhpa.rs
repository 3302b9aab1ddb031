//! cronhpa-controller end to end: the binary and the pinned kubectl against the sandbox over
//! loopback. The seed's CronHPA YAML goes in verbatim through `kubectl apply`; the controller's
//! clock is shifted with its test-only `--clock-offset` flag so that the seed's weekly
//! `0 23 * * 7` (Sunday 23:00) comes due seconds after the test starts. Needs the
//! `cronhpa-controller` binary next to `sandbox` (`make test-e2e` builds both).

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Utc, Weekday};
use e2e::cluster::{
    ClusterConfig,
    harness::{
        ChildProcess, Kubectl, Sandbox, ScratchDir, wait_for, workspace_binary, workspace_root,
    },
};
use serde_json::Value;

/// The next Sunday 23:00 UTC at least two minutes away.
fn next_sunday_2300() -> DateTime<Utc> {
    let floor = Utc::now() + ChronoDuration::minutes(2);
    let mut day = floor.date_naive();
    loop {
        let t = Utc.from_utc_datetime(&day.and_hms_opt(23, 0, 0).expect("time"));
        if day.weekday() == Weekday::Sun && t > floor {
            return t;
        }
        day = day.succ_opt().expect("date");
    }
}

struct Setup {
    sandbox: Sandbox,
    kubectl: Kubectl,
    dir: ScratchDir,
    /// Real time at which the controller's shifted clock reads Sunday 23:00.
    fire_real: DateTime<Utc>,
    fire: DateTime<Utc>,
    offset: ChronoDuration,
}

/// Sandbox, CRD, the seed's Deployment target and the seed's CronHPA (verbatim), with
/// lastScheduleTime recorded 1 s before "now" on the controller's shifted clock, which reads
/// `lead` before the Sunday fire.
async fn setup(lead: Duration) -> Setup {
    let sandbox = Sandbox::start(ClusterConfig::with_nodes(1))
        .await
        .expect("sandbox");
    let kubectl = sandbox.kubectl();
    let crd = workspace_root().join("manifests/crds/cronhpas.extensions.tkestack.io.yaml");
    kubectl
        .ok(&["apply", "--server-side", "-f", crd.to_str().expect("path")])
        .await
        .expect("install CRD");
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/cronhpas.extensions.tkestack.io",
            "--timeout=30s",
        ])
        .await
        .expect("CRD established");
    kubectl
        .ok(&[
            "create",
            "deployment",
            "demo-deployment",
            "--image=nginx",
            "--replicas=2",
        ])
        .await
        .expect("deployment");
    let seed = workspace_root().join("crates/addon-common/tests/fixtures/cronhpa-weekly.yaml");
    let out = kubectl
        .ok(&["apply", "-f", seed.to_str().expect("path")])
        .await
        .expect("apply the seed CronHPA");
    assert!(
        out.contains("cronhpa.extensions.tkestack.io/example-cron-hpa created"),
        "{out}"
    );

    let fire = next_sunday_2300();
    let lead = ChronoDuration::from_std(lead).expect("lead");
    let fake_now = fire - lead;
    let offset = fake_now - Utc::now();
    let last = (fake_now - ChronoDuration::seconds(1)).to_rfc3339();
    kubectl
        .ok(&[
            "patch",
            "cronhpa",
            "example-cron-hpa",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"lastScheduleTime":"{last}"}}}}"#),
        ])
        .await
        .expect("record the previous run");
    let dir = ScratchDir::new("cronhpa-e2e").expect("scratch dir");
    Setup {
        fire_real: fire - offset,
        fire,
        offset,
        sandbox,
        kubectl,
        dir,
    }
}

fn start_controller(s: &Setup, extra: &[&str]) -> ChildProcess {
    let kubeconfig = s.sandbox.kubeconfig.to_str().expect("path").to_owned();
    let offset = format!("{}ms", s.offset.num_milliseconds());
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.as_str(),
        "--admin-address",
        "127.0.0.1:0",
        "--leader-elect",
        "false",
        "--clock-offset",
        offset.as_str(),
    ];
    args.extend_from_slice(extra);
    ChildProcess::start(&workspace_binary("cronhpa-controller"), &args, &[])
        .expect("start cronhpa-controller")
}

async fn replicas(k: &Kubectl) -> String {
    k.ok(&[
        "get",
        "deployment",
        "demo-deployment",
        "-o",
        "jsonpath={.spec.replicas}",
    ])
    .await
    .unwrap_or_default()
}

async fn rescale_events(k: &Kubectl) -> usize {
    let out = k
        .ok(&[
            "get",
            "events",
            "-o",
            "json",
            "--field-selector",
            "involvedObject.name=example-cron-hpa",
        ])
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or_default();
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == "SuccessfulRescale")
                .map(|e| e["count"].as_u64().unwrap_or(1) as usize)
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_cronhpa_fires_through_kubectl_and_the_webhook_rejects_bad_schedules() {
    let s = setup(Duration::from_secs(4)).await;

    // The webhook, over HTTPS with a certificate for 127.0.0.1, registered like the chart does.
    let certs = e2e::tls::generate_certs(&[]).expect("certs");
    std::fs::write(s.dir.path().join("tls.crt"), certs.cert_pem()).expect("crt");
    std::fs::write(s.dir.path().join("tls.key"), certs.key_pem()).expect("key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let webhook_address = format!("127.0.0.1:{port}");
    let cert_dir = s.dir.path().to_str().expect("path").to_owned();
    let mut controller = start_controller(
        &s,
        &[
            "--webhook-address",
            &webhook_address,
            "--webhook-cert-dir",
            &cert_dir,
        ],
    );
    let ca = base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem);
    s.kubectl
        .apply(&format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: cronhpa-controller
webhooks:
- name: cronhpa.extensions.tkestack.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  clientConfig:
    url: https://127.0.0.1:{port}/validate-cronhpa
    caBundle: {ca}
  rules:
  - apiGroups: ["extensions.tkestack.io"]
    apiVersions: ["v1"]
    resources: ["cronhpas"]
    operations: ["CREATE", "UPDATE"]
"#
        ))
        .await
        .expect("register the webhook");

    // Sunday 23:00 on the controller's clock: the seed's `0 23 * * 7` → 30 replicas, on time.
    wait_for(
        "the Sunday scale to 30",
        Duration::from_secs(30),
        || async { (replicas(&s.kubectl).await == "30").then_some(()) },
    )
    .await
    .expect("scaled");
    let late = Utc::now() - s.fire_real;
    assert!(
        late < ChronoDuration::seconds(2),
        "scaled {late} after the scheduled time"
    );
    assert!(Utc::now() >= s.fire_real, "not before the scheduled time");
    let describe = s
        .kubectl
        .ok(&["describe", "cronhpa", "example-cron-hpa"])
        .await
        .expect("describe");
    assert!(describe.contains("SuccessfulRescale"), "{describe}");
    assert!(describe.contains("New size: 30"), "{describe}");
    let last = s
        .kubectl
        .ok(&[
            "get",
            "cronhpa",
            "example-cron-hpa",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ])
        .await
        .expect("status");
    assert_eq!(
        DateTime::parse_from_rfc3339(&last)
            .expect("time")
            .timestamp(),
        s.fire.timestamp(),
        "lastScheduleTime is the scheduled occurrence"
    );

    // An invalid schedule is rejected at admission, naming the field.
    let bad = r#"apiVersion: extensions.tkestack.io/v1
kind: CronHPA
metadata:
  name: bad
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: demo-deployment
  crons:
  - schedule: "0 23 * * 7"
    targetReplicas: 3
  - schedule: "0 25 * * *"
    targetReplicas: 3
"#;
    let rejected = wait_for("the webhook to answer", Duration::from_secs(20), || async {
        let out = s.kubectl.run(&["apply", "-f", "-"], Some(bad)).await.ok()?;
        (!out.success && out.stderr.contains("spec.crons[1].schedule")).then_some(out.stderr)
    })
    .await
    .expect("rejected by the webhook");
    assert!(rejected.contains("denied the request"), "{rejected}");
    controller.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_across_a_fire_time_fires_once_after_restart() {
    let s = setup(Duration::from_secs(5)).await;
    let mut controller = start_controller(&s, &["--webhook-address", ""]);
    // Let it start and sync, then kill it 2 s before the fire.
    wait_for(
        "the controller to record the next schedule",
        Duration::from_secs(20),
        || async {
            let out = s
                .kubectl
                .ok(&[
                    "get",
                    "cronhpa",
                    "example-cron-hpa",
                    "-o",
                    "jsonpath={.status.crons[1].nextScheduleTime}",
                ])
                .await
                .ok()?;
            (!out.is_empty()).then_some(())
        },
    )
    .await
    .expect("controller running");
    let kill_at = s.fire_real - ChronoDuration::seconds(2);
    if let Ok(wait) = (kill_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    controller.kill9().await;
    assert_eq!(replicas(&s.kubectl).await, "2", "killed before the fire");
    // Down across the fire time; back 2 s after it.
    if let Ok(wait) = (s.fire_real + ChronoDuration::seconds(2) - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    assert_eq!(replicas(&s.kubectl).await, "2", "nothing fired while down");
    controller.restart().await.expect("restart");
    wait_for(
        "the missed fire after restart",
        Duration::from_secs(30),
        || async { (replicas(&s.kubectl).await == "30").then_some(()) },
    )
    .await
    .expect("fired after restart");
    // Restart once more: the occurrence is recorded, so it must not fire again.
    controller.restart().await.expect("second restart");
    wait_for(
        "the restarted controller to resync",
        Duration::from_secs(20),
        || async {
            let out = s
                .kubectl
                .ok(&[
                    "get",
                    "cronhpa",
                    "example-cron-hpa",
                    "-o",
                    "jsonpath={.status.lastScheduleTime}",
                ])
                .await
                .ok()?;
            (!out.is_empty()).then_some(())
        },
    )
    .await
    .expect("status");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rescale_events(&s.kubectl).await, 1, "fired exactly once");
    controller.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_daily_example_and_tapp_and_hpa_targets_through_kubectl() {
    let sandbox = Sandbox::start(ClusterConfig::with_nodes(1))
        .await
        .expect("sandbox");
    let k = sandbox.kubectl();
    for crd in ["cronhpas.extensions.tkestack.io", "tapps.apps.tkestack.io"] {
        let path = workspace_root().join(format!("manifests/crds/{crd}.yaml"));
        k.ok(&["apply", "--server-side", "-f", path.to_str().expect("path")])
            .await
            .expect("install CRD");
        k.ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=30s",
        ])
        .await
        .expect("CRD established");
    }
    k.ok(&[
        "create",
        "deployment",
        "web-servers",
        "--image=nginx",
        "--replicas=5",
    ])
    .await
    .expect("deployment");
    k.ok(&[
        "create",
        "deployment",
        "api",
        "--image=nginx",
        "--replicas=1",
    ])
    .await
    .expect("deployment");
    let fixtures = workspace_root().join("crates/addon-common/tests/fixtures");
    for file in ["cronhpa-daily.yaml", "tapp-create.yaml"] {
        k.ok(&["apply", "-f", fixtures.join(file).to_str().expect("path")])
            .await
            .expect("apply seed");
    }
    k.apply(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: api
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 1
  maxReplicas: 5
---
apiVersion: extensions.tkestack.io/v1
kind: CronHPA
metadata:
  name: tapp-cron
spec:
  scaleTargetRef: {apiVersion: apps.tkestack.io/v1, kind: TApp, name: example-tapp}
  crons:
  - {schedule: "0 9 * * *", targetReplicas: 4}
---
apiVersion: extensions.tkestack.io/v1
kind: CronHPA
metadata:
  name: hpa-cron
spec:
  scaleTargetRef: {apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, name: api}
  crons:
  - {schedule: "0 9 * * *", targetReplicas: 7}
"#,
    )
    .await
    .expect("HPA and CronHPAs");

    // Down from 07:00 to 10:00 on the controller's clock: 08:00→60 and 09:00→10 were missed.
    let today = Utc::now().date_naive();
    let at = |h| Utc.from_utc_datetime(&today.and_hms_opt(h, 0, 0).expect("time"));
    for name in ["web-servers-cronhpa", "tapp-cron", "hpa-cron"] {
        let last = at(7).to_rfc3339();
        k.ok(&[
            "patch",
            "cronhpa",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"lastScheduleTime":"{last}"}}}}"#),
        ])
        .await
        .expect("record the previous run");
    }
    let offset = format!("{}ms", (at(10) - Utc::now()).num_milliseconds());
    let kubeconfig = sandbox.kubeconfig.to_str().expect("path").to_owned();
    let mut controller = ChildProcess::start(
        &workspace_binary("cronhpa-controller"),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--admin-address",
            "127.0.0.1:0",
            "--leader-elect",
            "false",
            "--clock-offset",
            &offset,
            "--webhook-address",
            "",
        ],
        &[],
    )
    .expect("start cronhpa-controller");

    let get = |args: &'static [&'static str]| {
        let k = k.clone();
        async move { k.ok(args).await.unwrap_or_default() }
    };
    wait_for(
        "the catch-up to the latest missed cron (10)",
        Duration::from_secs(30),
        || async {
            (get(&[
                "get",
                "deployment",
                "web-servers",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .await
                == "10")
                .then_some(())
        },
    )
    .await
    .expect("web-servers at 10, not 60");
    wait_for(
        "the TApp scaled through /scale",
        Duration::from_secs(30),
        || async {
            (get(&[
                "get",
                "tapp",
                "example-tapp",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .await
                == "4")
                .then_some(())
        },
    )
    .await
    .expect("TApp at 4");
    wait_for(
        "the HPA's minReplicas raised",
        Duration::from_secs(30),
        || async {
            (get(&[
                "get",
                "hpa",
                "api",
                "-o",
                "jsonpath={.spec.minReplicas}/{.spec.maxReplicas}",
            ])
            .await
                == "7/7")
                .then_some(())
        },
    )
    .await
    .expect("HPA bounds moved");
    assert_eq!(
        get(&[
            "get",
            "deployment",
            "api",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "1",
        "HPA mode leaves the replicas to the HPA"
    );
    let wide = get(&["get", "cronhpa", "-o", "wide"]).await;
    assert!(wide.contains("web-servers-cronhpa"), "{wide}");
    controller.kill9().await;
}
