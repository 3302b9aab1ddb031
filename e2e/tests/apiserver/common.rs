#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use axum::body::Body;
use e2e::{ApiServer, Config, RunningServer};
use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Size
      type: string
      jsonPath: .spec.size
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget for tests.
        properties:
          spec:
            type: object
            description: Desired state of the widget.
            required: [size]
            properties:
              replicas:
                type: integer
                minimum: 0
                maximum: 100
                description: Number of widget replicas.
              size:
                type: string
                enum: [S, M, L]
                description: Size of the widget, one of S, M or L.
              name:
                type: string
                maxLength: 10
                pattern: '^[a-z]+$'
              port:
                x-kubernetes-int-or-string: true
              mode:
                type: string
                default: auto
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
              template:
                type: object
                x-kubernetes-embedded-resource: true
                x-kubernetes-preserve-unknown-fields: true
              note:
                type: string
                nullable: true
              tags:
                type: array
                items:
                  type: string
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
              phase:
                type: string
"#;

/// Config for tests: short bookmarks.
pub fn test_config() -> Config {
    Config {
        bookmark_interval: Duration::from_millis(500),
        ..Default::default()
    }
}

pub fn server() -> ApiServer {
    ApiServer::new(test_config())
}

pub fn crd_json() -> Value {
    serde_yaml::from_str(WIDGET_CRD).expect("crd yaml")
}

/// Raw in-process request.
pub async fn call(
    srv: &ApiServer,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<Value>,
) -> (StatusCode, Value, http::HeaderMap) {
    let body = match body {
        Some(v) if ct.contains("yaml") => Body::from(serde_yaml::to_string(&v).expect("yaml")),
        Some(v) => Body::from(serde_json::to_vec(&v).expect("json")),
        None => Body::empty(),
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(body)
        .expect("request");
    let resp = srv.router().oneshot(req).await.expect("router");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v, headers)
}

pub async fn post(srv: &ApiServer, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, v, _) = call(srv, "POST", path, "application/json", Some(body)).await;
    (s, v)
}

pub async fn get(srv: &ApiServer, path: &str) -> (StatusCode, Value) {
    let (s, v, _) = call(srv, "GET", path, "application/json", None).await;
    (s, v)
}

/// Reads a watch (`path` with `?watch=true...`, asked for as `accept`) until `until` holds
/// of the events `decode` splits off the bytes read so far: (headers, events, bytes left).
pub async fn read_watch_as<T>(
    srv: &ApiServer,
    path: &str,
    accept: &str,
    until: impl Fn(&[T]) -> bool,
    mut decode: impl FnMut(&mut Vec<u8>) -> Vec<T>,
) -> (http::HeaderMap, Vec<T>, Vec<u8>) {
    use http_body_util::BodyExt;
    let req = Request::builder()
        .uri(path)
        .header("accept", accept)
        .body(Body::empty())
        .unwrap();
    let resp = srv.router().oneshot(req).await.unwrap();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let (mut buf, mut events) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&events) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("watch event in time");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
        events.extend(decode(&mut buf));
    }
    (headers, events, buf)
}

pub async fn install_crd(srv: &ApiServer) {
    let (s, v) = post(
        srv,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd_json(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Poll `f` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    e2e::wait::until(what, timeout, f).await
}

/// Locate kubectl: $KUBECTL, else <workspace>/.tools/bin/kubectl.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    if p.exists() {
        return p;
    }
    panic!("kubectl not found: run `make tools` (or set KUBECTL=/path/to/kubectl)");
}

/// kubectl bound to one server, with its own HOME, cache dir and kubeconfig.
pub struct Kubectl {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
}

impl Kubectl {
    pub fn new(running: &RunningServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        running.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Kubectl {
            dir,
            kubeconfig,
            bin: kubectl_path(),
        }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.env_clear()
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", "/usr/bin:/bin")
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .kill_on_drop(true);
        c
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run kubectl")
    }

    pub async fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn kubectl");
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(stdin.as_bytes()).await.expect("write stdin");
        drop(si);
        child.wait_with_output().await.expect("kubectl output")
    }

    /// Run and require success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_stdin(args, stdin).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Start a server on a free loopback port (HTTPS) and a kubectl for it.
pub async fn start_tcp() -> (ApiServer, RunningServer, Kubectl) {
    let srv = server();
    let running = srv
        .serve_tcp("127.0.0.1:0".parse().expect("addr"), true)
        .await
        .expect("serve");
    let k = Kubectl::new(&running);
    (srv, running, k)
}
