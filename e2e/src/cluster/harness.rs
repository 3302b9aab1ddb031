//! Harness for end-to-end tests (of this crate and of the controllers' crates, as a
//! dev-dependency): a sandbox (emulated API server over loopback HTTPS + simulated cluster) on a
//! free port with a kubeconfig file, controller binaries as child processes (kill -9, restart),
//! a kubectl wrapper with a per-test HOME and cache dir, and wait helpers with deadlines.
//!
//! With `E2E_KUBECONFIG` set, [`Sandbox::start`] connects to that (real) cluster instead;
//! [`Sandbox::simulation`] is then `None` and tests that need simulation controls (node
//! failure, fault injection) skip themselves through it:
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use e2e::cluster::harness::Sandbox;
//! let sb = Sandbox::start(e2e::cluster::ClusterConfig::with_nodes(3)).await?;
//! sb.kubectl().apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").await?;
//! let Some(sim) = sb.simulation("node failure") else { return Ok(()) }; // skipped on a real cluster
//! sim.set_node_ready("node-1", false).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{ClusterConfig, SimCluster};
use crate::{ApiServer, Config, RunningServer};

/// A per-test scratch directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(ScratchDir(p))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running sandbox, or a connection to a real cluster (`E2E_KUBECONFIG`).
pub struct Sandbox {
    /// The emulated API server (None against a real cluster).
    pub server: Option<ApiServer>,
    /// Its loopback listener.
    pub running: Option<RunningServer>,
    /// The simulated cluster.
    pub cluster: Option<SimCluster>,
    /// Kubeconfig file for kubectl and controller processes.
    pub kubeconfig: PathBuf,
    /// The sandbox process when started with [`Sandbox::start_process`].
    pub process: Option<ChildProcess>,
    dir: ScratchDir,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts an API server on 127.0.0.1 (free port, HTTPS) with a simulated cluster, or uses
    /// `E2E_KUBECONFIG` when set. Its kubeconfig's cluster and context are named `e2e`.
    pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Sandbox> {
        Self::start_named("e2e", cfg).await
    }

    /// Like [`Sandbox::start`], with the kubeconfig's cluster and context named `name` (the user
    /// `<name>-admin`): sandboxes with different names are independent clusters in one process
    /// whose kubeconfigs merge into one ([`crate::tls::merge_kubeconfigs`]).
    pub async fn start_named(name: &str, cfg: ClusterConfig) -> anyhow::Result<Sandbox> {
        let dir = ScratchDir::new("e2e-sandbox")?;
        if let Some(kc) = std::env::var_os("E2E_KUBECONFIG").filter(|v| !v.is_empty()) {
            return Ok(Sandbox {
                server: None,
                running: None,
                cluster: None,
                kubeconfig: PathBuf::from(kc),
                process: None,
                dir,
            });
        }
        let server = ApiServer::new(Config {
            graceful_pod_deletion: true,
            name: name.to_string(),
            ..Default::default()
        });
        let running = server.serve_tcp("127.0.0.1:0".parse()?, true).await?;
        let cluster = SimCluster::start_with_server(&server, cfg).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        running.write_kubeconfig(&kubeconfig)?;
        Ok(Sandbox {
            server: Some(server),
            running: Some(running),
            cluster: Some(cluster),
            kubeconfig,
            process: None,
            dir,
        })
    }

    /// Starts the `sandbox` binary `bin` as a child process on a free port (extra flags such as
    /// `--nodes 2` or `--state-file PATH` in `args`) and waits for its kubeconfig. Simulation
    /// controls are not available in this mode ([`Sandbox::simulation`] is `None`).
    pub async fn start_process(bin: impl AsRef<Path>, args: &[&str]) -> anyhow::Result<Sandbox> {
        let dir = ScratchDir::new("e2e-sandbox")?;
        let kubeconfig = dir.path().join("kubeconfig");
        let kc = kubeconfig.to_string_lossy().into_owned();
        let mut all = vec!["--listen", "127.0.0.1:0", "--kubeconfig-out", kc.as_str()];
        all.extend_from_slice(args);
        let process = ChildProcess::start(bin.as_ref(), &all, &[])?;
        let mut sb = Sandbox {
            server: None,
            running: None,
            cluster: None,
            kubeconfig,
            process: Some(process),
            dir,
        };
        sb.wait_kubeconfig().await?;
        Ok(sb)
    }

    async fn wait_kubeconfig(&mut self) -> anyhow::Result<()> {
        let path = self.kubeconfig.clone();
        let start = Instant::now();
        while !path.is_file() {
            if let Some(p) = self.process.as_mut()
                && !p.is_running()
            {
                anyhow::bail!(
                    "the sandbox process exited before writing {}",
                    path.display()
                );
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "no kubeconfig from the sandbox after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// For [`Sandbox::start_process`]: stops the sandbox with SIGINT (Ctrl-C: it saves its
    /// `--state-file`) and waits for it to exit.
    pub async fn stop_process(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.process.as_mut() {
            p.interrupt().await?;
        }
        Ok(())
    }

    /// For [`Sandbox::start_process`]: starts the sandbox process again with the same flags
    /// (after [`Sandbox::stop_process`] or [`ChildProcess::kill9`]); it listens on a new port
    /// and rewrites the kubeconfig.
    pub async fn restart_process(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.kubeconfig);
        if let Some(p) = self.process.as_mut() {
            p.restart().await?;
        }
        self.wait_kubeconfig().await
    }

    /// A client: in-process for the sandbox, from the kubeconfig for a real cluster.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        if let Some(s) = &self.server {
            return Ok(s.client());
        }
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// The simulated cluster for tests that need simulation controls; `None` (and a "skipped"
    /// line on stderr naming `what`) against a real cluster.
    pub fn simulation(&self, what: &str) -> Option<&SimCluster> {
        if self.cluster.is_none() {
            let why = if self.process.is_some() {
                "the sandbox runs as a child process"
            } else {
                "E2E_KUBECONFIG is set"
            };
            eprintln!("SKIPPED (needs the in-process simulated cluster; {why}): {what}");
        }
        self.cluster.as_ref()
    }

    /// A kubectl bound to this sandbox, with its own HOME and cache dir.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(
            &self.kubeconfig,
            &self
                .dir
                .path()
                .join(format!("kubectl-{}", uuid::Uuid::new_v4().simple())),
        )
    }

    /// Starts a controller binary with `KUBECONFIG` pointing at the sandbox.
    pub fn spawn(&self, bin: impl AsRef<Path>, args: &[&str]) -> anyhow::Result<ChildProcess> {
        ChildProcess::start(
            bin.as_ref(),
            args,
            &[("KUBECONFIG", self.kubeconfig.as_os_str().to_owned())],
        )
    }

    /// Stops the simulated cluster and the listener.
    pub async fn shutdown(&self) {
        if let Some(c) = &self.cluster {
            c.shutdown().await;
        }
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            c.cancellation_token().cancel();
        }
    }
}

/// A child process (a controller binary) that can be killed with SIGKILL and restarted.
#[derive(Debug)]
pub struct ChildProcess {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
    child: Option<tokio::process::Child>,
    log: Option<PathBuf>,
    /// How many times it was started.
    pub starts: u32,
}

impl ChildProcess {
    /// Starts `bin args` with extra environment; stdout/stderr are inherited (test output).
    pub fn start(
        bin: &Path,
        args: &[&str],
        env: &[(&str, std::ffi::OsString)],
    ) -> anyhow::Result<Self> {
        Self::launch(bin, args, env, None)
    }

    /// Like [`ChildProcess::start`], but stdout and stderr are appended to the file `log`
    /// (kept across restarts), for tests that check what the process logs.
    pub fn start_logged(
        bin: &Path,
        args: &[&str],
        env: &[(&str, std::ffi::OsString)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(bin, args, env, Some(log.to_path_buf()))
    }

    fn launch(
        bin: &Path,
        args: &[&str],
        env: &[(&str, std::ffi::OsString)],
        log: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut p = ChildProcess {
            bin: bin.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            child: None,
            log,
            starts: 0,
        };
        p.spawn()?;
        Ok(p)
    }

    /// What the process logged so far (empty unless started with [`ChildProcess::start_logged`]).
    pub fn logs(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read(l).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut c = tokio::process::Command::new(&self.bin);
        c.args(&self.args).stdin(Stdio::null()).kill_on_drop(true);
        if let Some(log) = &self.log {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            c.stderr(out.try_clone()?).stdout(out);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(
            c.spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?,
        );
        self.starts += 1;
        Ok(())
    }

    /// Restarts the process (SIGKILL first if it runs).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await;
        self.spawn()
    }

    /// SIGKILL (no graceful shutdown), waiting until the process is gone.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGINT (like Ctrl-C), waiting until the process has exited.
    pub async fn interrupt(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let status = tokio::process::Command::new("kill")
                    .arg("-INT")
                    .arg(pid.to_string())
                    .status()
                    .await?;
                anyhow::ensure!(status.success(), "kill -INT {pid} failed");
            }
            let _ = c.wait().await;
        }
        Ok(())
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The OS process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

/// The workspace root (where `manifests/` and `crates/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A binary of the workspace (a controller, `sandbox`) built in the same target directory as
/// the running test: `target/<profile>/<name>`. Building the workspace's integration tests
/// builds every package's binaries there (`make test-e2e`).
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_default();
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace --bins` or `make test-e2e`",
        bin.display()
    );
    bin
}

/// The pinned kubectl: `$KUBECTL`, else `<workspace>/.tools/bin/kubectl`, else `kubectl` on PATH.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return p;
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    if ws.is_file() {
        return ws;
    }
    PathBuf::from("kubectl")
}

/// kubectl with its own HOME and `--cache-dir`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// Binary.
    pub bin: PathBuf,
    /// Kubeconfig.
    pub kubeconfig: PathBuf,
    /// HOME / cache directory.
    pub home: PathBuf,
}

/// Output of a kubectl run.
#[derive(Debug)]
pub struct KubectlOutput {
    /// Exit success.
    pub success: bool,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Kubectl {
    /// A kubectl for `kubeconfig` using `home` (created) as HOME and cache dir.
    pub fn new(kubeconfig: &Path, home: &Path) -> Self {
        let _ = std::fs::create_dir_all(home);
        Kubectl {
            bin: kubectl_path(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    /// Runs kubectl with `args` (and optional stdin).
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<KubectlOutput> {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::process::Command::new(&self.bin);
        c.env_clear()
            .env("HOME", &self.home)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", "/usr/bin:/bin")
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .args(args)
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().with_context(|| {
            format!(
                "running {} (set KUBECTL or run make tools)",
                self.bin.display()
            )
        })?;
        if let Some(mut si) = child.stdin.take() {
            if let Some(s) = stdin {
                si.write_all(s.as_bytes()).await?;
            }
            drop(si);
        }
        let out = child.wait_with_output().await?;
        Ok(KubectlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs and requires success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args, None).await?;
        anyhow::ensure!(
            out.success,
            "kubectl {args:?} failed: {}{}",
            out.stderr,
            out.stdout
        );
        Ok(out.stdout)
    }

    /// `kubectl apply -f -` with `yaml`.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let out = self.run(&["apply", "-f", "-"], Some(yaml)).await?;
        anyhow::ensure!(
            out.success,
            "kubectl apply failed: {}{}",
            out.stderr,
            out.stdout
        );
        Ok(out.stdout)
    }
}

/// Polls `f` until it returns `Some`, failing after `timeout` ([`crate::wait::try_until`]).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Ok(crate::wait::try_until(what, timeout, f).await?)
}

/// A minimal HTTP/1.1 client (`Connection: close`) for a local JSON API (what `curl` does):
/// `method path` on `127.0.0.1:port`, answering the status code and the body as JSON (a
/// string when it is not JSON).
pub async fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> std::io::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    let value = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    Ok((code, value))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
