#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{ClusterConfig, SimCluster};
use e2e::{ApiServer, Config, RunningServer};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Env {
    pub server: ApiServer,
    pub cluster: SimCluster,
    pub client: Client,
}

impl Env {
    pub async fn start(cfg: ClusterConfig) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = ApiServer::new(Config {
            graceful_pod_deletion: true,
            ..Default::default()
        });
        let cluster = SimCluster::start_with_server(&server, cfg)
            .await
            .expect("start cluster");
        let client = server.client();
        Env {
            server,
            cluster,
            client,
        }
    }

    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub async fn create_pod(&self, v: Value) -> Pod {
        let pod: Pod = serde_json::from_value(v).expect("pod json");
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        self.pods(&ns)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Polls `name` until `f` returns Some.
    pub async fn wait_pod<T>(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        f: impl Fn(&Pod) -> Option<T>,
    ) -> T {
        let api = self.pods(ns);
        wait_for(what, || {
            let api = api.clone();
            let name = name.to_string();
            let f = &f;
            async move { api.get_opt(&name).await.ok().flatten().and_then(|p| f(&p)) }
        })
        .await
    }
}

/// Polls `f` until it returns Some, failing after [`DEADLINE`] (`e2e::wait::until`).
pub async fn wait_for<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    e2e::wait::until(what, DEADLINE, f).await
}

pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

pub fn cond(p: &Pod, ty: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.clone())
}

/// The message of `PodScheduled=False` with reason `Unschedulable`, once the scheduler set it.
pub fn unschedulable_message(p: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
        .clone();
    (c.reason.as_deref() == Some("Unschedulable")).then(|| c.message.unwrap_or_default())
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

pub fn simple_pod(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
    })
}

fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(".tools/bin/kubectl")
}

/// kubectl with a per-test HOME and cache dir.
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

    pub async fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::process::Command::new(&self.bin);
        c.env_clear()
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", "/usr/bin:/bin")
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn kubectl");
        let mut si = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).await.expect("write stdin");
        }
        drop(si);
        child.wait_with_output().await.expect("kubectl output")
    }

    /// Runs and requires success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None).await
    }

    pub async fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
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

/// Serves `app` over HTTPS on 127.0.0.1 with a CA and certificate generated here (SANs:
/// 127.0.0.1, localhost and `extra_sans`); returns the port and the CA (PEM).
pub async fn serve_tls(app: axum::Router, extra_sans: &[&str]) -> (u16, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let sans: Vec<String> = extra_sans.iter().map(|s| s.to_string()).collect();
    let certs = e2e::tls::generate_certs(&sans).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(
                certs.cert_der.clone(),
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certs.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(stream).await {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                }
            });
        }
    });
    (port, certs.ca_pem)
}
