//! tapp-controller end to end: the binary and the pinned kubectl against the sandbox over
//! loopback. The seed's TApp YAML (crates/addon-common/tests/fixtures/tapp-*.yaml) goes in
//! verbatim through `kubectl apply -f <file>`; the controller serves its validating webhook
//! with a certificate for 127.0.0.1, registered by URL with the CA as caBundle (as the chart
//! registers it by Service). Needs the `tapp-controller` binary next to `sandbox`
//! (`make test-e2e` or building the workspace's integration tests builds both).
//!
//! Pod availability is sampled with `kubectl get pods -o json` in a loop while updates run:
//! at every sample, no more desired pods may be missing, terminating or not Ready than the
//! budget allows, and no instance may have more than one pod.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use base64::Engine;
use e2e::cluster::{
    ClusterConfig,
    harness::{
        ChildProcess, Kubectl, Sandbox, ScratchDir, wait_for, workspace_binary, workspace_root,
    },
};
use serde_json::Value;

const NAME: &str = "example-tapp";
const SELECTOR: &str = "app=example-tapp";
const DEADLINE: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    workspace_root()
        .join("crates/addon-common/tests/fixtures")
        .join(name)
}

/// The tapp webhook's path (crates/tapp-controller/src/webhook.rs `PATH`).
const WEBHOOK_PATH: &str = "/validate/tapp";

struct Setup {
    // Dropped last: the controller first (kill_on_drop), then the sandbox.
    controller: ChildProcess,
    kubectl: Kubectl,
    dir: ScratchDir,
    _sandbox: Sandbox,
}

/// Sandbox with 3 nodes, the CRD (server-side), the controller binary with its webhook on a
/// free loopback port and the ValidatingWebhookConfiguration pointing at it.
async fn setup() -> Setup {
    let sandbox = Sandbox::start(ClusterConfig::with_nodes(3))
        .await
        .expect("sandbox");
    let kubectl = sandbox.kubectl();
    let crd = workspace_root().join("manifests/crds/tapps.apps.tkestack.io.yaml");
    kubectl
        .ok(&["apply", "--server-side", "-f", crd.to_str().expect("path")])
        .await
        .expect("install CRD");
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/tapps.apps.tkestack.io",
            "--timeout=30s",
        ])
        .await
        .expect("CRD established");

    let dir = ScratchDir::new("tapp-e2e").expect("scratch dir");
    let certs = e2e::tls::generate_certs(&[]).expect("certs");
    let crt = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&crt, certs.cert_pem()).expect("crt");
    std::fs::write(&key, certs.key_pem()).expect("key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let webhook_address = format!("127.0.0.1:{port}");
    let kubeconfig = sandbox.kubeconfig.to_str().expect("path").to_owned();
    let controller = ChildProcess::start(
        &workspace_binary("tapp-controller"),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--admin-address",
            "127.0.0.1:0",
            "--leader-elect",
            "false",
            "--webhook-address",
            &webhook_address,
            "--webhook-tls-cert-file",
            crt.to_str().expect("path"),
            "--webhook-tls-key-file",
            key.to_str().expect("path"),
        ],
        &[],
    )
    .expect("start tapp-controller");

    let ca = base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem);
    kubectl
        .apply(&format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: tapp-controller
webhooks:
- name: tapp-controller.kube-system.svc
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  clientConfig:
    url: https://127.0.0.1:{port}{WEBHOOK_PATH}
    caBundle: {ca}
  rules:
  - apiGroups: ["apps.tkestack.io"]
    apiVersions: ["v1"]
    resources: ["tapps"]
    operations: ["CREATE", "UPDATE"]
"#
        ))
        .await
        .expect("register the webhook");
    Setup {
        controller,
        kubectl,
        dir,
        _sandbox: sandbox,
    }
}

/// `kubectl apply -f <file>`, retried while the webhook is not listening yet (failurePolicy
/// Fail turns a refused connection into "failed calling webhook").
async fn apply_file(k: &Kubectl, path: &std::path::Path) -> String {
    let path = path.to_str().expect("path");
    wait_for(&format!("kubectl apply -f {path}"), DEADLINE, || async {
        let out = k.run(&["apply", "-f", path], None).await.ok()?;
        if out.success {
            return Some(out.stdout);
        }
        assert!(
            out.stderr.contains("failed calling webhook"),
            "kubectl apply -f {path}: {}",
            out.stderr
        );
        None
    })
    .await
    .expect("applied")
}

async fn get_json(k: &Kubectl, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.ok(&all).await.ok()?;
    serde_json::from_str(&out).ok()
}

async fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let (kind, name) = what.split_once('/').expect("kind/name");
    k.ok(&["get", kind, name, "-o", &format!("jsonpath={path}")])
        .await
        .unwrap_or_default()
}

/// The TApp's status was computed for its current generation.
async fn tapp_status(k: &Kubectl, name: &str) -> Option<Value> {
    let t = get_json(k, &["get", "tapp", name]).await?;
    (t["status"]["observedGeneration"] == t["metadata"]["generation"]).then(|| t["status"].clone())
}

fn statuses_of(status: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(status["statuses"].clone()).unwrap_or_default()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn wait_statuses(k: &Kubectl, name: &str, want: BTreeMap<String, String>) -> Value {
    wait_for(&format!("{name} statuses {want:?}"), DEADLINE, || async {
        let st = tapp_status(k, name).await?;
        (statuses_of(&st) == want).then_some(st)
    })
    .await
    .expect("statuses")
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
}

fn is_available(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null() && condition(pod, "Ready") == Some("True")
}

/// Every pod on `image` (spec and as the kubelet runs it), Ready, gate True.
fn rolled_to(pod: &Value, image: &str) -> bool {
    pod["spec"]["containers"][0]["image"] == image
        && pod["status"]["containerStatuses"][0]["image"] == image
        && is_available(pod)
        && condition(pod, "tkestack.io/InPlaceUpdate") == Some("True")
}

async fn pods(k: &Kubectl, selector: &str) -> Option<BTreeMap<String, Value>> {
    let list = get_json(k, &["get", "pods", "-l", selector]).await?;
    Some(
        list["items"]
            .as_array()?
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p.clone(),
                )
            })
            .collect(),
    )
}

fn names(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter().map(|i| format!("{prefix}-{i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The sampler: `kubectl get pods -o json` in a loop.

#[derive(Default, Debug)]
struct Samples {
    /// Pods that must be available unless the controller is changing them.
    desired: BTreeSet<String>,
    count: usize,
    max_unavailable: usize,
    max_pods: usize,
    /// Every pod name seen.
    names: BTreeSet<String>,
    /// Samples where one instance had more than one pod.
    duplicates: Vec<String>,
}

struct Sampler {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const SAMPLERS: u64 = 3;

impl Samples {
    fn record(&mut self, pods: BTreeMap<String, Value>) {
        let unavailable = self
            .desired
            .iter()
            .filter(|n| !pods.get(*n).is_some_and(is_available))
            .count();
        let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
        for p in pods.values() {
            let id = p["metadata"]["labels"]["tapp_instance_key"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            *per_instance.entry(id).or_default() += 1;
        }
        if per_instance.values().any(|&n| n > 1) {
            self.duplicates.push(format!("{per_instance:?}"));
        }
        self.count += 1;
        self.max_unavailable = self.max_unavailable.max(unavailable);
        self.max_pods = self.max_pods.max(pods.len());
        self.names.extend(pods.into_keys());
    }
}

impl Sampler {
    fn start(k: &Kubectl, selector: &str, desired: &[String]) -> Self {
        let samples = Arc::new(Mutex::new(Samples {
            desired: desired.iter().cloned().collect(),
            ..Samples::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        // Three kubectl loops, staggered, for a finer sampling of the pods' states.
        let tasks = (0..SAMPLERS)
            .map(|i| {
                let (k, selector) = (k.clone(), selector.to_owned());
                let (s, st) = (samples.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(40 * i)).await;
                    while !st.load(Ordering::SeqCst) {
                        let Some(pods) = pods(&k, &selector).await else {
                            continue;
                        };
                        s.lock().expect("lock").record(pods);
                    }
                })
            })
            .collect();
        Self {
            samples,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("sampler");
        }
        Arc::try_unwrap(self.samples)
            .expect("sampler stopped")
            .into_inner()
            .expect("lock")
    }
}

// ---------------------------------------------------------------------------------------------
// 1–6, 8: the seed walkthrough through kubectl.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_walkthrough_through_kubectl_and_the_webhook() {
    let mut s = setup().await;
    let k = s.kubectl.clone();

    // 1. Create 3 replicas → all Running; describe shows SuccessfulCreate events.
    let out = apply_file(&k, &fixture("tapp-create.yaml")).await;
    assert!(
        out.contains("tapp.apps.tkestack.io/example-tapp created"),
        "{out}"
    );
    wait_for("kubectl wait readyReplicas=3", DEADLINE, || async {
        k.ok(&[
            "wait",
            "tapp/example-tapp",
            "--for=jsonpath={.status.readyReplicas}=3",
            "--timeout=30s",
        ])
        .await
        .ok()
    })
    .await
    .expect("3 ready");
    k.ok(&[
        "wait",
        "pods",
        "-l",
        SELECTOR,
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=30s",
    ])
    .await
    .expect("pods Running");
    let st = wait_statuses(
        &k,
        NAME,
        expect(&[("0", "Running"), ("1", "Running"), ("2", "Running")]),
    )
    .await;
    assert_eq!(st["appStatus"], "Running", "{st}");
    assert_eq!(st["replicas"], 3, "{st}");
    assert_eq!(st["scaleLabelSelector"], SELECTOR, "{st}");
    let initial = pods(&k, SELECTOR).await.expect("pods");
    assert_eq!(
        initial.keys().cloned().collect::<Vec<_>>(),
        names(NAME, 0..3)
    );
    let describe = wait_for("SuccessfulCreate events in describe", DEADLINE, || async {
        let d = k.ok(&["describe", "tapp", NAME]).await.ok()?;
        (0..3)
            .all(|i| {
                d.lines().any(|l| {
                    l.contains("SuccessfulCreate") && l.contains(&format!("Instance: {NAME}-{i}"))
                })
            })
            .then_some(d)
    })
    .await
    .expect("events");
    assert!(describe.contains("tapp-controller"), "{describe}");

    // 2. Pin instance 1 to the pool template `test`: updated in place.
    let uid = |p: &Value| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let sampler = Sampler::start(&k, SELECTOR, &names(NAME, 0..3));
    apply_file(&k, &fixture("tapp-pin-instance.yaml")).await;
    wait_for("pod 1 on nginx:latest", DEADLINE, || async {
        let p = pods(&k, SELECTOR).await?;
        rolled_to(p.get("example-tapp-1")?, "nginx:latest").then_some(())
    })
    .await
    .expect("pinned");
    let pod1 = "pod/example-tapp-1";
    assert_eq!(
        jsonpath(&k, pod1, "{.metadata.uid}").await,
        uid(&initial["example-tapp-1"]),
        "pod 1 kept its UID"
    );
    assert_eq!(
        jsonpath(&k, pod1, "{.status.containerStatuses[0].restartCount}").await,
        "1"
    );
    assert_eq!(
        jsonpath(&k, pod1, "{.spec.containers[0].image}").await,
        "nginx:latest"
    );
    for other in ["example-tapp-0", "example-tapp-2"] {
        let what = format!("pod/{other}");
        assert_eq!(
            jsonpath(&k, &what, "{.spec.containers[0].image}").await,
            "nginx:1.7.9",
            "{other} untouched"
        );
        assert_eq!(
            jsonpath(&k, &what, "{.metadata.uid}").await,
            uid(&initial[other])
        );
    }
    wait_statuses(
        &k,
        NAME,
        expect(&[("0", "Running"), ("1", "Running"), ("2", "Running")]),
    )
    .await;

    // 3. Roll every instance to `test` with maxUnavailable 1: at most 1 unavailable per sample.
    apply_file(&k, &fixture("tapp-rolling-update.yaml")).await;
    wait_for("every pod on nginx:latest", DEADLINE, || async {
        let p = pods(&k, SELECTOR).await?;
        (p.len() == 3 && p.values().all(|p| rolled_to(p, "nginx:latest"))).then_some(())
    })
    .await
    .expect("rolled");
    wait_statuses(
        &k,
        NAME,
        expect(&[("0", "Running"), ("1", "Running"), ("2", "Running")]),
    )
    .await;
    let samples = sampler.finish().await;
    eprintln!(
        "pin + roll: {} samples, max unavailable {}",
        samples.count, samples.max_unavailable
    );
    assert!(samples.count > 5, "sampled the rollout: {samples:?}");
    assert!(
        samples.max_unavailable <= 1,
        "never more than 1 unavailable: {samples:?}"
    );
    assert!(samples.duplicates.is_empty(), "{samples:?}");
    let rolled = pods(&k, SELECTOR).await.expect("pods");
    for (name, p) in &rolled {
        assert_eq!(uid(p), uid(&initial[name]), "{name} updated in place");
    }

    // 4. Kill instance 1. The documentation's kill example (the fixture, verbatim otherwise)
    // has no `apiVersion:`, which kubectl needs (docs/tapp.md, walkthrough): it is added here.
    let kill = std::fs::read_to_string(fixture("tapp-kill-instance.yaml")).expect("fixture");
    assert!(
        !kill.contains("apiVersion:"),
        "the fixture still lacks apiVersion"
    );
    let kill_file = s.dir.path().join("tapp-kill-instance.yaml");
    std::fs::write(
        &kill_file,
        format!("apiVersion: apps.tkestack.io/v1\n{kill}"),
    )
    .expect("write");
    apply_file(&k, &kill_file).await;
    wait_for("pod 1 gone", DEADLINE, || async {
        let p = pods(&k, SELECTOR).await?;
        (!p.contains_key("example-tapp-1")).then_some(())
    })
    .await
    .expect("pod 1 deleted");
    wait_for(".status.statuses.1 == Killed", DEADLINE, || async {
        (jsonpath(&k, "tapp/example-tapp", "{.status.statuses.1}").await == "Killed").then_some(())
    })
    .await
    .expect("Killed");
    let st = wait_statuses(
        &k,
        NAME,
        expect(&[("0", "Running"), ("1", "Killed"), ("2", "Running")]),
    )
    .await;
    assert_eq!(
        (st["replicas"].clone(), st["readyReplicas"].clone()),
        (3.into(), 2.into())
    );

    // 5. kubectl scale → 5 instances: 0,2,3,4 Running, 1 Killed.
    let out = k
        .ok(&["scale", "--replicas=5", "tapp/example-tapp"])
        .await
        .expect("kubectl scale");
    assert!(out.contains("scaled"), "{out}");
    let st = wait_statuses(
        &k,
        NAME,
        expect(&[
            ("0", "Running"),
            ("1", "Killed"),
            ("2", "Running"),
            ("3", "Running"),
            ("4", "Running"),
        ]),
    )
    .await;
    assert_eq!(
        (st["replicas"].clone(), st["readyReplicas"].clone()),
        (5.into(), 4.into())
    );
    let p = wait_for("pods 0,2,3,4 Running", DEADLINE, || async {
        let p = pods(&k, SELECTOR).await?;
        (p.keys().cloned().collect::<Vec<_>>() == names(NAME, [0, 2, 3, 4])
            && p.values().all(|p| p["status"]["phase"] == "Running"))
        .then_some(p)
    })
    .await
    .expect("scaled pods");
    for new in ["example-tapp-3", "example-tapp-4"] {
        // No `templates` entry: defaultTemplateName (`default`), as the original.
        assert_eq!(
            p[new]["spec"]["containers"][0]["image"], "nginx:1.7.9",
            "{new}"
        );
    }

    // 6. Invalid specs are rejected by the webhook through kubectl, naming the field.
    let invalid = [
        (
            "maxUnavailable 0%",
            r#"  updateStrategy:
    maxUnavailable: "0%""#,
            "spec.updateStrategy.maxUnavailable",
        ),
        (
            "a templates entry pointing to a missing pool template",
            r#"  templates:
    "1": missing"#,
            "spec.templates[1]",
        ),
        (
            "a negative instance id",
            r#"  statuses:
    "-1": Killed"#,
            "spec.statuses[-1]",
        ),
        (
            // `Pending` passes the CRD's enum (every instance status); the webhook only
            // accepts the desired states Killed and Running.
            "a status value other than Killed/Running",
            r#"  statuses:
    "0": Pending"#,
            "spec.statuses[0]",
        ),
    ];
    for (what, extra, field) in invalid {
        let yaml = format!(
            r#"apiVersion: apps.tkestack.io/v1
kind: TApp
metadata:
  name: invalid-tapp
spec:
  replicas: 2
  template:
    metadata:
      labels:
        app: invalid-tapp
    spec:
      containers:
      - name: nginx
        image: nginx:1.7.9
{extra}
"#
        );
        let out = k
            .run(&["apply", "-f", "-"], Some(&yaml))
            .await
            .expect("kubectl");
        assert!(!out.success, "{what} accepted: {}", out.stdout);
        assert!(
            out.stderr.contains("denied the request") && out.stderr.contains(field),
            "{what}: the webhook's message names {field}: {}",
            out.stderr
        );
    }
    // Updates go through it too.
    let out = k
        .run(
            &[
                "patch",
                "tapp",
                NAME,
                "--type=merge",
                "-p",
                r#"{"spec":{"updateStrategy":{"forceUpdate":{"maxUnavailable":"101%"}}}}"#,
            ],
            None,
        )
        .await
        .expect("kubectl");
    assert!(
        !out.success
            && out
                .stderr
                .contains("spec.updateStrategy.forceUpdate.maxUnavailable"),
        "{}",
        out.stderr
    );
    assert!(
        !k.ok(&["get", "tapps", "-o", "name"])
            .await
            .expect("get")
            .contains("invalid-tapp")
    );

    // 8. kubectl delete cascades.
    k.ok(&["delete", "tapp", NAME, "--wait=false"])
        .await
        .expect("delete");
    wait_for("the pods garbage-collected", DEADLINE, || async {
        k.ok(&[
            "wait",
            "--for=delete",
            "pod/example-tapp-0",
            "pod/example-tapp-2",
            "pod/example-tapp-3",
            "pod/example-tapp-4",
            "--timeout=30s",
        ])
        .await
        .ok()?;
        pods(&k, SELECTOR).await?.is_empty().then_some(())
    })
    .await
    .expect("pods deleted");
    k.ok(&["wait", "--for=delete", "tapp/example-tapp", "--timeout=30s"])
        .await
        .expect("tapp gone");
    assert!(s.controller.is_running(), "the controller never exited");
    s.controller.kill9().await;
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9 in the middle of rolling updates of a 10-pod TApp.

fn roll_tapp(image: &str) -> String {
    format!(
        r#"apiVersion: apps.tkestack.io/v1
kind: TApp
metadata:
  name: roll
spec:
  replicas: 10
  template:
    metadata:
      labels:
        app: roll
    spec:
      containers:
      - name: nginx
        image: {image}
  updateStrategy:
    maxUnavailable: 1
"#
    )
}

/// Applies the 10-pod TApp `roll` on nginx:1 and waits until every pod runs it; returns the
/// file to re-apply with other images.
async fn roll_created(k: &Kubectl, dir: &ScratchDir) -> PathBuf {
    let file = dir.path().join("roll.yaml");
    std::fs::write(&file, roll_tapp("nginx:1")).expect("write");
    apply_file(k, &file).await;
    wait_for("10 pods Running", DEADLINE, || async {
        let p = pods(k, "app=roll").await?;
        (p.len() == 10 && p.values().all(|p| rolled_to(p, "nginx:1"))).then_some(())
    })
    .await
    .expect("created");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_killed_during_rolling_updates_keeps_the_budget() {
    let mut s = setup().await;
    let k = s.kubectl.clone();
    let sel = "app=roll";
    let file = roll_created(&k, &s.dir).await;
    let all = names("roll", 0..10);
    let initial_uids: BTreeMap<String, String> = pods(&k, sel)
        .await
        .expect("pods")
        .into_iter()
        .map(|(n, p)| {
            (
                n,
                p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();

    // Three rollouts, each with a kill -9 after a different number of pods was updated.
    for (round, kill_after) in [(2usize, 2usize), (3, 5), (4, 8)] {
        let image = format!("nginx:{round}");
        let sampler = Sampler::start(&k, sel, &all);
        std::fs::write(&file, roll_tapp(&image)).expect("write");
        apply_file(&k, &file).await;
        let updated = wait_for(
            &format!("{kill_after} pods updated to {image}"),
            DEADLINE,
            || async {
                let p = pods(&k, sel).await?;
                let n = p
                    .values()
                    .filter(|p| p["spec"]["containers"][0]["image"] == image.as_str())
                    .count();
                (n >= kill_after).then_some(n)
            },
        )
        .await
        .expect("rollout progressing");
        s.controller.kill9().await;
        let at_kill = pods(&k, sel).await.expect("pods");
        let done = at_kill.values().filter(|p| rolled_to(p, &image)).count();
        assert!(
            done < 10,
            "round {round}: killed in the middle (updated {updated}, done {done})"
        );
        s.controller.restart().await.expect("restart");
        wait_for(&format!("every pod on {image}"), DEADLINE, || async {
            let p = pods(&k, sel).await?;
            (p.len() == 10 && p.values().all(|p| rolled_to(p, &image))).then_some(())
        })
        .await
        .expect("rollout completed after the restart");
        let st = wait_for("status current", DEADLINE, || async {
            let st = tapp_status(&k, "roll").await?;
            (st["readyReplicas"] == 10).then_some(st)
        })
        .await
        .expect("status");
        assert!(statuses_of(&st).values().all(|v| v == "Running"), "{st}");
        let samples = sampler.finish().await;
        eprintln!(
            "round {round}: killed after {updated} updated ({done} done); {} samples, max unavailable {}",
            samples.count, samples.max_unavailable
        );
        assert!(samples.count > 5, "round {round}: {samples:?}");
        assert!(
            samples.max_unavailable <= 1,
            "round {round}: budget exceeded: {samples:?}"
        );
        assert!(
            samples.max_pods <= 10,
            "round {round}: extra pods: {samples:?}"
        );
        assert!(samples.duplicates.is_empty(), "round {round}: {samples:?}");
        assert!(
            samples.names.iter().all(|n| all.contains(n)),
            "round {round}: only instance pods: {samples:?}"
        );
    }
    // Image-only changes: every pod was updated in place through all rounds and restarts.
    let last = pods(&k, sel).await.expect("pods");
    for (name, p) in &last {
        assert_eq!(
            p["metadata"]["uid"].as_str().unwrap_or_default(),
            initial_uids[name],
            "{name} kept its UID"
        );
        assert_eq!(
            p["status"]["containerStatuses"][0]["restartCount"], 3,
            "{name}"
        );
    }
    assert_eq!(s.controller.starts, 4);
    s.controller.kill9().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Two replicas with Lease leader election: the standby takes over after a kill -9.

fn replica(kubeconfig: &str, name: &str) -> ChildProcess {
    ChildProcess::start(
        &workspace_binary("tapp-controller"),
        &[
            "--kubeconfig",
            kubeconfig,
            "--admin-address",
            "127.0.0.1:0",
            "--leader-elect",
            "true",
            "--leader-elect-namespace",
            "default",
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "500ms",
            "--webhook-address",
            "",
        ],
        &[("POD_NAME", name.into())],
    )
    .expect("start a replica")
}

async fn lease_holder(k: &Kubectl) -> Option<String> {
    let holder = jsonpath(k, "lease/tapp-controller", "{.spec.holderIdentity}").await;
    (!holder.is_empty()).then_some(holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_standby_takes_over_after_kill_9() {
    let mut s = setup().await;
    let k = s.kubectl.clone();
    // This test runs its own replicas, without the webhook.
    s.controller.kill9().await;
    k.ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "tapp-controller",
    ])
    .await
    .expect("remove the webhook");
    let kubeconfig = s._sandbox.kubeconfig.to_str().expect("path").to_owned();
    let mut a = replica(&kubeconfig, "replica-a");
    let mut b = replica(&kubeconfig, "replica-b");
    let first = wait_for("a leader", DEADLINE, || lease_holder(&k))
        .await
        .expect("leader elected");
    assert!(
        ["replica-a", "replica-b"].contains(&first.as_str()),
        "{first}"
    );

    let sel = "app=roll";
    let file = roll_created(&k, &s.dir).await;

    // kill -9 the leader (no release of the Lease), then roll: the standby must take over
    // once the Lease expires and finish the rollout.
    let (leader, standby) = if first == "replica-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader.kill9().await;
    std::fs::write(&file, roll_tapp("nginx:2")).expect("write");
    apply_file(&k, &file).await;
    let second = wait_for("a new leader", DEADLINE, || async {
        lease_holder(&k).await.filter(|h| *h != first)
    })
    .await
    .expect("standby took over");
    wait_for("every pod on nginx:2", DEADLINE, || async {
        let p = pods(&k, sel).await?;
        (p.len() == 10 && p.values().all(|p| rolled_to(p, "nginx:2"))).then_some(())
    })
    .await
    .expect("rollout completed by the new leader");
    assert!(standby.is_running(), "{second} still running");
    standby.kill9().await;
}
