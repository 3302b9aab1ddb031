//! kubectl (the pinned version) against the emulator over loopback HTTPS.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: default
  labels:
    team: a
spec:
  size: S
  replicas: 1
"#;

async fn setup_crd(k: &Kubectl) {
    let out = k.ok_stdin(&["apply", "-f", "-"], WIDGET_CRD).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{out}"
    );
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_with_selectors_and_output_formats() {
    let (_srv, _running, k) = start_tcp().await;
    k.ok(&["create", "configmap", "a1", "--from-literal=x=1"])
        .await;
    k.ok(&["create", "configmap", "b1", "--from-literal=x=2"])
        .await;
    k.ok(&["label", "configmap", "a1", "team=a"]).await;
    k.ok(&["label", "configmap", "b1", "team=b"]).await;
    let out = k
        .ok(&["get", "configmaps", "-l", "team=a", "-o", "json"])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a1"]);
    let out = k
        .ok(&[
            "get",
            "configmaps",
            "-l",
            "team in (a,b),team!=b",
            "-o",
            "yaml",
        ])
        .await;
    let v: Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["data"]["x"], "1");
    let out = k
        .ok(&["get", "configmap", "b1", "-o", "jsonpath={.data.x}"])
        .await;
    assert_eq!(out, "2");
    let out = k.ok(&["get", "configmaps"]).await;
    assert!(
        out.contains("NAME") && out.contains("a1") && out.contains("b1"),
        "{out}"
    );
    let out = k.ok(&["get", "ns"]).await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "{out}");
    }
    let out = k.run(&["get", "configmap", "nope"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configmaps \"nope\" not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_changes() {
    let (_srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
    let mut cmd = k.command(&["get", "widgets", "-w", "--request-timeout=0"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut created = false;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("watch output in time")
            .unwrap()
            .expect("line");
        seen.push(line.clone());
        if line.starts_with("w1") && !created {
            // the initial list was printed; now change things
            k.ok(&["scale", "widget", "w1", "--replicas=7"]).await;
            created = true;
        }
        if line.starts_with("w1") && line.contains(" 7 ") {
            break;
        }
    }
    assert!(
        seen[0].contains("NAME") && seen[0].contains("REPLICAS") && seen[0].contains("SIZE"),
        "{seen:?}"
    );
    child.kill().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_strict_create_update_unchanged() {
    let (srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    let out = k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let out = k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
    assert!(out.contains("widget.example.com/w1 unchanged"), "{out}");
    let changed = WIDGET.replace("replicas: 1", "replicas: 2");
    let out = k.ok_stdin(&["apply", "-f", "-"], &changed).await;
    assert!(out.contains("widget.example.com/w1 configured"), "{out}");
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(v["spec"]["mode"], "auto", "schema default applied");
    assert!(
        v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // strict validation: unknown field rejected by the server, naming the field
    let bad = changed.replace("size: S", "size: S\n  colour: red");
    let out = k.run_stdin(&["apply", "-f", "-"], &bad).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");
    // invalid value: 422 naming the field
    let bad = changed.replace("size: S", "size: XL");
    let out = k.run_stdin(&["apply", "-f", "-"], &bad).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.size: Unsupported value: \"XL\""),
        "{err}"
    );
    // a built-in through strategic merge patch
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: \"1\"\n";
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], cm)
            .await
            .contains("configmap/c1 created")
    );
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], cm)
            .await
            .contains("configmap/c1 unchanged")
    );
    let cm2 = cm.replace("a: \"1\"", "b: \"2\"");
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], &cm2)
            .await
            .contains("configmap/c1 configured")
    );
    let (_, v) = get(&srv, "/api/v1/namespaces/default/configmaps/c1").await;
    assert_eq!(v["data"], json!({"b": "2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_server_side() {
    let (srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    let out = k
        .ok_stdin(&["apply", "--server-side", "-f", "-"], WIDGET)
        .await;
    assert!(
        out.contains("widget.example.com/w1 serverside-applied"),
        "{out}"
    );
    let with_tags = WIDGET.replace("replicas: 1", "replicas: 4\n  tags: [x]");
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &with_tags)
        .await;
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert_eq!(v["spec"]["replicas"], 4);
    assert_eq!(v["spec"]["tags"], json!(["x"]));
    let mf = v["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        mf.iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{mf:?}"
    );
    // dropping a field from the applied config removes it
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &WIDGET.replace("replicas: 1", "replicas: 4"),
    )
    .await;
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert!(v["spec"].get("tags").is_none(), "{v}");
    // another manager conflicts unless forced
    let other = WIDGET.replace("replicas: 1", "replicas: 9");
    let out = k
        .run_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            &other,
        )
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &other,
    )
    .await;
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert_eq!(v["spec"]["replicas"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_crd_and_describe_events() {
    let (srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
    let out = k.ok(&["scale", "widget", "w1", "--replicas=3"]).await;
    assert!(out.contains("widget.example.com/w1 scaled"), "{out}");
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["metadata"]["generation"], 2);
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "w1.1", "namespace": "default"},
        "involvedObject": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "namespace": "default", "uid": uid},
        "reason": "Scaled", "message": "widget scaled to three", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "source": {"component": "test"}});
    let (s, v) = post(&srv, "/api/v1/namespaces/default/events", ev).await;
    assert_eq!(s, 201, "{v}");
    let out = k.ok(&["describe", "widget", "w1"]).await;
    assert!(
        out.contains("Events:") && out.contains("widget scaled to three") && out.contains("Scaled"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_label_annotate_patch() {
    let (srv, _running, k) = start_tcp().await;
    let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: d1
spec:
  selector:
    matchLabels: {app: d1}
  template:
    metadata:
      labels: {app: d1}
    spec:
      containers:
      - name: app
        image: nginx:1
        env:
        - name: A
          value: "1"
      - name: side
        image: busybox:1
"#;
    k.ok_stdin(&["apply", "-f", "-"], deploy).await;
    k.ok(&["label", "deployment", "d1", "tier=web"]).await;
    k.ok(&["annotate", "deployment", "d1", "note=hello"]).await;
    // strategic (default for built-ins): merge containers and env by name
    k.ok(&["patch", "deployment", "d1", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:2","env":[{"name":"B","value":"2"}]}]}}}}"#]).await;
    let path = "/apis/apps/v1/namespaces/default/deployments/d1";
    let (_, v) = get(&srv, path).await;
    assert_eq!(v["metadata"]["labels"]["tier"], "web");
    assert_eq!(v["metadata"]["annotations"]["note"], "hello");
    let cs = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert_eq!(cs[0]["image"], "nginx:2");
    assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
    assert_eq!(cs[1]["image"], "busybox:1");
    k.ok(&[
        "patch",
        "deployment",
        "d1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":null,"x":"y"}}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "deployment",
        "d1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"busybox:2"}]"#,
    ])
    .await;
    let (_, v) = get(&srv, path).await;
    assert!(v["metadata"]["labels"].get("tier").is_none());
    assert_eq!(v["metadata"]["labels"]["x"], "y");
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][1]["image"],
        "busybox:2"
    );
    k.ok(&["label", "deployment", "d1", "x-"]).await;
    k.ok(&["annotate", "deployment", "d1", "note=bye", "--overwrite"])
        .await;
    let (_, v) = get(&srv, path).await;
    assert!(v["metadata"]["labels"].get("x").is_none());
    assert_eq!(v["metadata"]["annotations"]["note"], "bye");
    // status subresource patch via kubectl
    k.ok(&[
        "patch",
        "deployment",
        "d1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1}}"#,
    ])
    .await;
    let (_, v) = get(&srv, path).await;
    assert_eq!(v["status"]["replicas"], 1);
    // pods: only the image may change, as upstream
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  containers:\n  - name: app\n    image: nginx:1\n";
    k.ok_stdin(&["apply", "-f", "-"], pod).await;
    k.ok(&["set", "image", "pod/p1", "app=nginx:2"]).await;
    let out = k
        .run(&[
            "patch",
            "pod",
            "p1",
            "-p",
            r#"{"spec":{"restartPolicy":"Never"}}"#,
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pod updates may not change fields"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_and_wait_with_finalizer() {
    let (srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    let w = WIDGET.replace("  labels:", "  finalizers: [example.com/hold]\n  labels:");
    k.ok_stdin(&["apply", "-f", "-"], &w).await;
    let out = k.ok(&["delete", "widget", "w1", "--wait=false"]).await;
    assert!(out.contains("deleted"), "{out}");
    let (_, v) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let mut waiter = k.command(&["wait", "--for=delete", "widget/w1", "--timeout=30s"]);
    waiter
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let waiter = waiter.spawn().unwrap();
    // the waiter must still be blocked while the finalizer is present
    let (s, _, _) = call(
        &srv,
        "PATCH",
        "/apis/example.com/v1/namespaces/default/widgets/w1",
        "application/merge-patch+json",
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(s, 200);
    let out = tokio::time::timeout(Duration::from_secs(30), waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, _) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_namespace_create_and_cascading_delete() {
    let (srv, _running, k) = start_tcp().await;
    k.ok(&["create", "namespace", "team"]).await;
    k.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
    ])
    .await;
    k.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
    ])
    .await;
    let out = k
        .ok(&["delete", "namespace", "team", "--timeout=30s"])
        .await;
    assert!(out.contains("namespace \"team\" deleted"), "{out}");
    let (s, _) = get(&srv, "/api/v1/namespaces/team").await;
    assert_eq!(s, 404);
    let (_, v) = get(&srv, "/api/v1/configmaps").await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["metadata"]["namespace"] != "team")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_crd_field() {
    let (_srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    let out = k.ok(&["explain", "widgets.spec.size"]).await;
    assert!(out.contains("Size of the widget"), "{out}");
    let out = k.ok(&["explain", "widgets.spec"]).await;
    assert!(
        out.contains("replicas") && out.contains("Number of widget replicas"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wrong_token_is_unauthorized() {
    let srv = e2e::ApiServer::new(e2e::Config {
        token: Some("s3cret".into()),
        ..test_config()
    });
    let running = srv
        .serve_tcp("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let k = Kubectl::new(&running);
    k.ok(&["get", "ns"]).await;
    let out = k.run(&["get", "ns", "--token=wrong"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_create_commands_send_protobuf() {
    let (srv, _running, k) = start_tcp().await;
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ])
    .await;
    let (_, d) = get(&srv, "/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(c["ports"][0]["containerPort"], 80);
    assert_eq!(
        c["imagePullPolicy"], "IfNotPresent",
        "defaulted after decoding: {c}"
    );
    assert!(
        d["metadata"]
            .get("creationTimestamp")
            .is_some_and(Value::is_string)
    );
    k.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox:1",
        "--",
        "sh",
        "-c",
        "exit 0",
    ])
    .await;
    let (_, j) = get(&srv, "/apis/batch/v1/namespaces/default/jobs/once").await;
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["sh", "-c", "exit 0"])
    );
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=8080",
        "--target-port=80",
    ])
    .await;
    let (_, s) = get(&srv, "/api/v1/namespaces/default/services/web").await;
    assert_eq!(s["spec"]["ports"][0]["port"], 8080);
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    assert!(
        s["spec"]["clusterIP"].as_str().unwrap().starts_with("10."),
        "{s}"
    );
    k.ok(&["create", "serviceaccount", "robot"]).await;
    k.ok(&["create", "role", "reader", "--verb=get", "--resource=pods"])
        .await;
    k.ok(&[
        "create",
        "rolebinding",
        "rb",
        "--role=reader",
        "--serviceaccount=default:robot",
    ])
    .await;
    let (_, rb) = get(
        &srv,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/rb",
    )
    .await;
    assert_eq!(rb["roleRef"]["name"], "reader");
    assert_eq!(rb["subjects"][0]["name"], "robot");
    let token = k.ok(&["create", "token", "robot"]).await;
    assert!(token.trim().starts_with("e2e-sa-token-"), "{token}");
    // access reviews are answered (authorization is not enforced)
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "pods"]).await.trim(),
        "yes"
    );
    // built-in Table columns
    let out = k.ok(&["get", "deployments"]).await;
    assert!(
        out.contains("READY") && out.contains("UP-TO-DATE") && out.contains("0/2"),
        "{out}"
    );
    let out = k.ok(&["get", "services"]).await;
    assert!(out.contains("8080/TCP"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_events_recorded_by_kube_runtime() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (srv, _running, k) = start_tcp().await;
    setup_crd(&k).await;
    k.ok_stdin(&["apply", "-f", "-"], WIDGET).await;
    let (_, w) = get(&srv, "/apis/example.com/v1/namespaces/default/widgets/w1").await;
    let oref = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("example.com/v1".into()),
        kind: Some("Widget".into()),
        name: Some("w1".into()),
        namespace: Some("default".into()),
        uid: w["metadata"]["uid"].as_str().map(String::from),
        ..Default::default()
    };
    let recorder = Recorder::new(
        srv.client(),
        Reporter {
            controller: "widget-controller".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "Reconciled".into(),
                note: Some("all widgets polished".into()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &oref,
        )
        .await
        .unwrap();
    let out = k.ok(&["describe", "widget", "w1"]).await;
    assert!(
        out.contains("all widgets polished") && out.contains("Reconciled"),
        "{out}"
    );
    let out = k.ok(&["get", "events"]).await;
    assert!(
        out.contains("widget/w1") && out.contains("all widgets polished"),
        "{out}"
    );
    let (_, v) = get(&srv, "/apis/events.k8s.io/v1/namespaces/default/events").await;
    assert_eq!(v["items"][0]["regarding"]["name"], "w1");
    assert_eq!(v["items"][0]["note"], "all widgets polished");
}

/// kubectl's typed reads (describe) get protobuf, decoded by client-go itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_reads_decode_protobuf_responses() {
    let (srv, _running, k) = start_tcp().await;
    k.ok(&["create", "configmap", "settings", "--from-literal=a=1"])
        .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ])
    .await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rich", "labels": {"app": "rich"}, "annotations": {"note": "n"}},
    "spec": {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}],
        "initContainers": [{"name": "init", "image": "busybox:1", "command": ["sh", "-c", "true"]}],
        "containers": [{
            "name": "app", "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 8080}],
            "env": [{"name": "MODE", "value": "prod"},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}}],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 7},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}},
            "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": true},
                             {"name": "info", "mountPath": "/etc/info"}]
        }],
        "volumes": [
            {"name": "conf", "configMap": {"name": "settings"}},
            {"name": "sec", "secret": {"secretName": "creds"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
        ]
    }});
    k.ok_stdin(&["apply", "-f", "-"], &pod.to_string()).await;
    let (_, p) = get(&srv, "/api/v1/namespaces/default/pods/rich").await;
    let uid = p["metadata"]["uid"].clone();
    let (s, v) = post(&srv, "/api/v1/namespaces/default/events", json!({
        "metadata": {"name": "rich.1"},
        "involvedObject": {"kind": "Pod", "name": "rich", "namespace": "default", "apiVersion": "v1", "uid": uid},
        "reason": "Pulled", "message": "image pulled in 1s", "type": "Normal", "count": 2,
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
        "source": {"component": "kubelet"}})).await;
    assert_eq!(s, http::StatusCode::CREATED, "{v}");
    let out = k.run(&["describe", "pod", "rich", "-v=8"]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("application/vnd.kubernetes.protobuf"),
        "kubectl did not ask for protobuf: {stderr}"
    );
    for want in [
        "nginx:1.27",
        ":8080/healthz delay=0s",
        "period=7s",
        ":http/ready",
        "exec [cat /tmp/ok]",
        "100m",
        "128Mi",
        "memory:  1Gi",
        "(x2 over",
        "MODE:  prod",
        "<set to the key 'password' in secret 'creds'>",
        "<set to the key 'a' of config map 'settings'>",
        "ConfigMap  Optional: false",
        "/etc/conf from conf (ro)",
        "ConfigMap (a volume populated by a ConfigMap)",
        "metadata.labels -> labels",
        "SecretName:  creds",
        "DownwardAPI",
        "SizeLimit:   1Gi",
        "disk=ssd",
        "k:NoSchedule op=Exists for 30s",
        "image pulled in 1s",
        "Pulled",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
    ])
    .await;
    let out = k.ok(&["describe", "deployment", "web"]).await;
    assert!(
        out.contains("2 desired") && out.contains("Selector:           app=web"),
        "{out}"
    );
    let out = k.ok(&["describe", "secret", "creds"]).await;
    assert!(out.contains("password:  6 bytes"), "{out}");
    let out = k.ok(&["describe", "configmap", "settings"]).await;
    assert!(out.contains("a:") && out.contains('1'), "{out}");
}
