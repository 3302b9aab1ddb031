//! tapp-bench: N TApps × M pods on the sandbox: time to all Running, then a full in-place rollout.
//!
//! ```text
//! make bench            # every benchmark; this one alone (builds every binary first):
//! hack/bench.sh tapp-bench [--tapps 1000] [--pods 10] [--nodes 20]
//! # or build what it starts and run it:
//! cargo build --release --bins -p e2e -p tapp-controller -p addon-bench
//! target/release/tapp-bench [--tapps 1000] [--pods 10] [--nodes 20]
//! ```
//! Starts the `sandbox` binary (API server + simulated scheduler and kubelets, plain HTTP) and
//! the `tapp-controller` binary as separate processes (found next to this executable). The
//! controller talks to the sandbox through a counting TCP proxy inside this process: the
//! sandbox serves plain HTTP (`--insecure-http`), so the proxy parses the HTTP/1.1 request
//! heads on their way and counts every request the controller sends (watches count once, when
//! opened). This process's own requests (creating and watching) go to the sandbox directly and
//! are not counted.
//!
//! Phase 1 creates the TApps (`updateStrategy.maxUnavailable` 50% by default) and ends when
//! every TApp reports `readyReplicas == replicas` for its current generation. Phase 2 changes
//! every TApp's image (an in-place rollout) and ends when every pod's container status shows
//! the new image with the pod Ready, and every TApp is Ready again for its new generation.
//! The controller's CPU seconds and RSS come from /proc. Between runs on the same machine and
//! day, the controller's CPU seconds per CPU second of the sandbox vary less than either
//! figure (a busier or slower machine moves both): compare changes by it, over alternating
//! runs of both builds (the machine's speed drifts within minutes):
//!
//! ```text
//! target/release/tapp-bench --bin-dir <build A> --compare <build B> --rounds 3
//! ```
//! Each directory holds a `sandbox` and a `tapp-controller` (symlink the same sandbox into
//! both to compare controllers).
//!
//! By default the three processes share every CPU, so the controller's CPU competes with the
//! API server's and the wall time follows their sum. `--isolate` gives the sandbox a CPU of its
//! own and runs the controller and this process on the others (through `taskset`), as a
//! controller and an API server on separate machines: the sandbox's CPU then bounds the wall
//! time, and the controller's share of the wall is about its CPU per CPU second of the sandbox.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use addon_bench::{free_port, install_crds, start_sandbox, usage};
use addon_common::api::tapp::TApp;
use addon_common::testing::KillOnDrop;
use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::KubeConfigOptions,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Parser, Debug)]
#[command(about = "TApp controller: N TApps x M pods to Running, then a full in-place rollout")]
struct Args {
    /// Number of TApps.
    #[arg(long, default_value_t = 1_000)]
    tapps: usize,
    /// Replicas of each TApp.
    #[arg(long, default_value_t = 10)]
    pods: usize,
    /// Simulated nodes (each with capacity pods=1000).
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// `updateStrategy.maxUnavailable` of every TApp.
    #[arg(long, default_value = "50%")]
    max_unavailable: String,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Directory holding the `sandbox` and `tapp-controller` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Concurrent create/patch requests of this benchmark.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// A second directory with `sandbox` and `tapp-controller` binaries (say, another build):
    /// runs alternate between the two, and a comparison follows the reports.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Runs of each build (alternating with `--compare`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Give the sandbox a CPU of its own (the first this process may use, through `taskset`)
    /// and run the controller and this benchmark on the others, as a controller and an API
    /// server on separate machines. Without it all three share every CPU.
    #[arg(long)]
    isolate: bool,
}

/// The figures of one run that the comparison uses.
#[derive(Debug, Clone, Copy)]
struct Summary {
    /// Phase 1 and phase 2 wall seconds.
    walls: (f64, f64),
    /// Controller and sandbox CPU seconds over both phases.
    controller_cpu: f64,
    sandbox_cpu: f64,
    /// Controller peak RSS, MiB.
    peak_rss: f64,
}

impl Summary {
    fn wall(&self) -> f64 {
        self.walls.0 + self.walls.1
    }
    fn share_of_wall(&self) -> f64 {
        self.controller_cpu / self.wall()
    }
    fn per_sandbox(&self) -> f64 {
        self.controller_cpu / self.sandbox_cpu
    }
}

/// The values in ascending order.
fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// "min–max (median)" of a figure over runs.
fn spread(values: impl IntoIterator<Item = f64>, fmt: impl Fn(f64) -> String) -> String {
    let v = sorted(values);
    match v.as_slice() {
        [] => "-".into(),
        [one] => fmt(*one),
        _ => format!(
            "{}–{} (median {})",
            fmt(v[0]),
            fmt(v[v.len() - 1]),
            fmt(median(&v))
        ),
    }
}

/// Median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Prints the comparison of the runs of each build.
fn print_comparison(builds: &[(String, Vec<Summary>)]) {
    println!(
        "comparison ({} runs each, alternating):",
        builds.first().map_or(0, |b| b.1.len())
    );
    for (label, runs) in builds {
        println!("  {label}");
        type Row = (&'static str, fn(&Summary) -> f64, fn(f64) -> String);
        let rows: [Row; 6] = [
            ("wall", Summary::wall, |v| format!("{v:.1} s")),
            (
                "controller CPU",
                |s| s.controller_cpu,
                |v| format!("{v:.2} s"),
            ),
            ("sandbox CPU", |s| s.sandbox_cpu, |v| format!("{v:.1} s")),
            ("share of wall", Summary::share_of_wall, |v| {
                format!("{:.1}%", 100.0 * v)
            }),
            ("per sandbox CPU s", Summary::per_sandbox, |v| {
                format!("{v:.3}")
            }),
            ("peak RSS", |s| s.peak_rss, |v| format!("{v:.1} MiB")),
        ];
        for (name, get, fmt) in rows {
            println!("    {name:<20} {}", spread(runs.iter().map(get), fmt));
        }
    }
    if let [(a, ra), (b, rb)] = builds {
        let med = |runs: &[Summary]| median(&sorted(runs.iter().map(Summary::per_sandbox)));
        println!(
            "  controller per sandbox CPU s (median) of {b} relative to {a}: {:.3} \
             (below 1: less controller CPU for the same API-server work)",
            med(rb) / med(ra)
        );
    }
}

/// Which CPUs `--isolate` gives the sandbox and everything else (`taskset --cpu-list` form).
#[derive(Debug, Clone, PartialEq)]
struct Isolation {
    sandbox: String,
    others: String,
    /// Number of CPUs in all.
    count: usize,
}

impl Isolation {
    /// From the CPUs this process may run on (`Cpus_allowed_list` in /proc/self/status).
    fn here() -> anyhow::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list in /proc/self/status")?;
        Self::split(list.trim())
    }

    /// The first CPU of a list such as `0-3,8` for the sandbox, the rest for the others.
    fn split(list: &str) -> anyhow::Result<Self> {
        let mut cpus = Vec::new();
        for part in list.split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let (lo, hi): (u32, u32) = (lo.trim().parse()?, hi.trim().parse()?);
            cpus.extend(lo..=hi);
        }
        match cpus.as_slice() {
            [first, rest @ ..] if !rest.is_empty() => Ok(Self {
                count: cpus.len(),
                sandbox: first.to_string(),
                others: rest
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            }),
            _ => bail!("--isolate needs at least two CPUs; this process may use {list:?}"),
        }
    }
}

/// `program` as a command, started through `taskset` on `cpus` when given.
fn pinned(program: PathBuf, cpus: Option<&str>) -> Command {
    match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.args(["--cpu-list", list]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// How often the threads of a process blocked and were woken again: the sum of their
/// `voluntary_ctxt_switches` (/proc/<pid>/task/*/status).
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Requests seen by the proxy, by "METHOD resource[/subresource] [list|watch]".
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// "GET pods watch", "PATCH pods/status", "POST events", … from a request line's method and target.
fn classify(method: &str, target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => return format!("{method} {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        r => r,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match rest {
        [] => format!("{method} discovery"),
        [resource] if method == "GET" => {
            format!("GET {resource} {}", if watch { "watch" } else { "list" })
        }
        [resource] | [resource, _] => format!("{method} {resource}"),
        [resource, _, sub, ..] => format!("{method} {resource}/{sub}"),
    }
}

/// Counts the HTTP/1.1 requests flowing from client to server: parses each request head, skips
/// its Content-Length body. Returns false once the stream can no longer be followed (chunked).
fn count_requests(buf: &mut Vec<u8>, body_left: &mut usize, counts: &Counts) -> bool {
    loop {
        if *body_left > 0 {
            let n = (*body_left).min(buf.len());
            buf.drain(..n);
            *body_left -= n;
            if *body_left > 0 {
                return true;
            }
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return true;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let (method, target) = (
            first.next().unwrap_or("?").to_string(),
            first.next().unwrap_or("?").to_string(),
        );
        *counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(classify(&method, &target))
            .or_default() += 1;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                *body_left = v.parse().unwrap_or(0);
            } else if k == "transfer-encoding" && v.contains("chunked") {
                counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry("(chunked request: connection no longer counted)".into())
                    .and_modify(|c| *c += 1)
                    .or_insert(1);
                return false;
            }
        }
    }
}

/// A TCP proxy on 127.0.0.1:<free> forwarding to `upstream` and counting HTTP requests.
async fn start_proxy(upstream: SocketAddr, counts: Counts) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let mut chunk = vec![0u8; 64 * 1024];
                let (mut pending, mut body_left, mut following) = (Vec::new(), 0usize, true);
                loop {
                    let n = match cr.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sw.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    if following {
                        pending.extend_from_slice(&chunk[..n]);
                        following = count_requests(&mut pending, &mut body_left, &counts);
                    }
                }
                let _ = sw.shutdown().await;
                let _ = down.await;
            });
        }
    });
    Ok(addr)
}

/// A plain HTTP GET of `path` on `addr` (the controller's admin port); the body, if 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// Sum of the samples of `name` (any labels) in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// Per-key difference `b - a`.
fn diff(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn print_counts(label: &str, c: &BTreeMap<String, u64>, pods: usize) {
    let mut rows: Vec<_> = c.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = rows
        .iter()
        .take(8)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  {label:<26}{} requests, {:.2} per pod: {}",
        total(c),
        total(c) as f64 / pods as f64,
        top.join(", ")
    );
}

/// Whether a TApp is Ready: status for its current generation with every replica ready.
fn tapp_ready(t: &TApp) -> bool {
    let gen_seen = match (t.metadata.generation, &t.status) {
        (Some(g), Some(s)) => s.observed_generation.is_some_and(|o| o >= g),
        (None, Some(_)) => true,
        _ => false,
    };
    gen_seen
        && t.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == t.spec.replicas && s.replicas == t.spec.replicas)
}

/// Whether the pod's container `c` reports `image` and the pod is Ready.
fn pod_rolled(p: &Pod, image: &str) -> bool {
    let Some(status) = &p.status else {
        return false;
    };
    let on_image = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.name == "c" && c.image == image && c.ready);
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    on_image && ready && p.metadata.deletion_timestamp.is_none()
}

/// Whether each object of a watch passes a test, by name.
type Judged = Arc<Mutex<HashMap<String, bool>>>;

/// Follows the objects `api` lists and watches with `config`: name → `judge(object)`, kept up
/// to date by a task (abort it when done).
fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    judge: impl Fn(&K) -> bool + Send + 'static,
) -> (Judged, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let state: Judged = Arc::default();
    let task = {
        let state = state.clone();
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                match ev {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        s.insert(o.meta().name.clone().unwrap_or_default(), judge(&o));
                    }
                    watcher::Event::Delete(o) => {
                        s.remove(&o.meta().name.clone().unwrap_or_default());
                    }
                    _ => {}
                }
            }
        })
    };
    (state, task)
}

/// Polls `done` every 100 ms until it is true; the elapsed time since `start`.
async fn wait_until(
    start: Instant,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> (bool, String),
) -> anyhow::Result<Duration> {
    let mut last_print = Instant::now();
    loop {
        let (ok, progress) = done();
        if ok {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: timed out after {timeout:?} ({progress})");
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:>5.0} s  {what}: {progress}",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let primary = addon_common::testing::sibling_bin_dir(args.bin_dir.clone())?;
    let mut builds: Vec<(PathBuf, Vec<Summary>)> = vec![(primary, Vec::new())];
    if let Some(other) = &args.compare {
        builds.push((other.clone(), Vec::new()));
    }
    // Read before this process is pinned: later runs use the same split.
    let cpus = if args.isolate {
        let iso = Isolation::here()?;
        // This process too: the proxy and the benchmark's own watches are client work.
        let status = Command::new("taskset")
            .args(["--all-tasks", "--cpu-list", "--pid", &iso.others])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .context("running taskset (util-linux) for --isolate")?;
        if !status.success() {
            bail!("taskset could not pin this process to CPUs {}", iso.others);
        }
        Some(iso)
    } else {
        None
    };
    let several = args.compare.is_some() || args.rounds > 1;
    for round in 1..=args.rounds {
        for (dir, runs) in &mut builds {
            if several {
                println!("== run {round} of {}: {}", args.rounds, dir.display());
            }
            runs.push(run_once(&args, dir, cpus.as_ref()).await?);
        }
    }
    if several {
        let labelled: Vec<(String, Vec<Summary>)> = builds
            .into_iter()
            .map(|(dir, runs)| (dir.display().to_string(), runs))
            .collect();
        print_comparison(&labelled);
    }
    Ok(())
}

/// One benchmark run with the binaries in `bin_dir`: prints its report.
async fn run_once(
    args: &Args,
    bin_dir: &std::path::Path,
    cpus: Option<&Isolation>,
) -> anyhow::Result<Summary> {
    let work = std::env::temp_dir().join(format!("tapp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let kubeconfig = work.join("kubeconfig");
    let proxied_kubeconfig = work.join("kubeconfig-proxied");

    let mut command = pinned(bin_dir.join("sandbox"), cpus.map(|i| i.sandbox.as_str()));
    command
        .arg("--insecure-http")
        .args(["--nodes", &args.nodes.to_string()])
        .args(["--node-capacity", "pods=1000"]);
    let (sandbox, kc) = start_sandbox(command, bin_dir, &kubeconfig).await?;
    let sandbox_pid = sandbox.0.id();
    let config =
        kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default()).await?;
    let upstream: SocketAddr = {
        let uri = &config.cluster_url;
        if uri.scheme_str() != Some("http") {
            bail!("the sandbox does not serve plain HTTP ({uri}); the request counter needs it");
        }
        format!(
            "{}:{}",
            uri.host().context("host")?,
            uri.port_u16().context("port")?
        )
        .parse()?
    };
    let counts: Counts = Arc::default();
    let proxy = start_proxy(upstream, counts.clone()).await?;
    let mut proxied = kc.clone();
    for c in &mut proxied.clusters {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.server = Some(format!("http://{proxy}"));
        }
    }
    // JSON is YAML.
    std::fs::write(&proxied_kubeconfig, serde_json::to_vec(&proxied)?)?;

    let client = Client::try_from(config)?;
    install_crds(&client).await?;
    let tapps: Api<TApp> = Api::namespaced(client.clone(), "default");

    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let controller = KillOnDrop(
        pinned(
            bin_dir.join("tapp-controller"),
            cpus.map(|i| i.others.as_str()),
        )
        .arg("--kubeconfig")
        .arg(&proxied_kubeconfig)
        .args([
            "--admin-address",
            &admin.to_string(),
            "--leader-elect",
            "false",
            "--webhook-address",
            "",
            "--log-filter",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tapp-controller (build it: cargo build --release -p tapp-controller)")?,
    );
    let pid = controller.0.id();
    let ready_start = Instant::now();
    while http_get(admin, "/readyz").is_none() {
        if ready_start.elapsed() > Duration::from_secs(60) {
            bail!("tapp-controller did not become ready on {admin}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let startup = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();

    // Watch the TApps for the whole run.
    let (tapp_state, watch_tapps) = follow(tapps.clone(), watcher::Config::default(), tapp_ready);
    let (n, m) = (args.tapps, args.pods);
    let timeout = Duration::from_secs(args.timeout);
    let ready_count = {
        let state = tapp_state.clone();
        move || -> (usize, usize) {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            (s.values().filter(|r| **r).count(), s.len())
        }
    };

    // Phase 1: create, wait for every TApp to be Running.
    eprintln!("phase 1: creating {n} TApps x {m} pods…");
    let (cpu0, _, _) = usage(pid)?;
    let wake0 = wakeups(pid);
    let (sb0, _, _) = usage(sandbox_pid)?;
    let (me0, _, _) = usage(std::process::id())?;
    let start1 = Instant::now();
    let image1 = "nginx:1.0";
    let image2 = "nginx:2.0";
    stream::iter(0..n)
        .map(|i| {
            let tapps = tapps.clone();
            let max_unavailable = args.max_unavailable.clone();
            async move {
                let tapp: TApp = serde_json::from_value(json!({
                    "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
                    "metadata": {"name": format!("t{i}")},
                    "spec": {"replicas": m,
                             "updateStrategy": {"maxUnavailable": max_unavailable},
                             "template": {"metadata": {"labels": {"app": format!("t{i}")}},
                                          "spec": {"containers": [{"name": "c", "image": image1}]}}}
                }))?;
                tapps.create(&PostParams::default(), &tapp).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let created_in = start1.elapsed();
    eprintln!("  created in {:.1} s", created_in.as_secs_f64());
    let running_in = wait_until(start1, timeout, "TApps Running", || {
        let (ready, seen) = ready_count();
        (ready == n && seen == n, format!("{ready}/{n} TApps ready"))
    })
    .await?;
    let (cpu1, rss1, _) = usage(pid)?;
    let wake1 = wakeups(pid);
    let (sb1, _, _) = usage(sandbox_pid)?;
    let (me1, _, _) = usage(std::process::id())?;
    let counts1 = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let metrics1 = http_get(admin, "/metrics").unwrap_or_default();

    // Phase 2: change every TApp's image, wait for every pod to run it.
    eprintln!("phase 2: in-place rollout of every TApp to {image2}…");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (pod_state, watch_pods) = follow(
        pods,
        watcher::Config::default().labels(addon_common::api::tapp::INSTANCE_ID_LABEL),
        move |p: &Pod| pod_rolled(p, image2),
    );
    let start2 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let tapps = tapps.clone();
            async move {
                let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image2}]}}}});
                tapps
                    .patch(&format!("t{i}"), &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let patched_in = start2.elapsed();
    eprintln!("  patched in {:.1} s", patched_in.as_secs_f64());
    // TApp watch events for the patches may still be in flight: a TApp counts only once its
    // status has observed the new generation (tapp_ready checks observedGeneration).
    let rolled_in = wait_until(start2, timeout, "rollout", || {
        let rolled = pod_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| **r)
            .count();
        let (ready, _) = ready_count();
        (
            rolled == n * m && ready == n,
            format!(
                "{rolled}/{} pods on {image2}, {ready}/{n} TApps ready",
                n * m
            ),
        )
    })
    .await?;
    let (cpu2, rss2, peak) = usage(pid)?;
    let wake2 = wakeups(pid);
    let (sb2, _, _) = usage(sandbox_pid)?;
    let (me2, _, _) = usage(std::process::id())?;
    let counts2 = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let metrics2 = http_get(admin, "/metrics").unwrap_or_default();
    watch_tapps.abort();
    watch_pods.abort();
    drop(controller);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&work);

    let pods_total = n * m;
    let (w1, w2) = (running_in.as_secs_f64(), rolled_in.as_secs_f64());
    // Once pinned, this process sees only its own CPUs.
    let cores = cpus.map_or_else(
        || std::thread::available_parallelism().map_or(0, |c| c.get()),
        |i| i.count,
    );
    println!(
        "tapp-bench: {n} TApps x {m} pods = {pods_total} pods, {} nodes, maxUnavailable {}, {cores} CPUs \
         (sandbox over loopback, plain HTTP)",
        args.nodes, args.max_unavailable
    );
    match cpus {
        Some(iso) => println!(
            "  CPUs                        sandbox on {}, controller and bench on {} (--isolate)",
            iso.sandbox, iso.others
        ),
        None => println!("  CPUs                        shared by sandbox, controller and bench"),
    }
    println!(
        "  phase 1 all Running         {w1:.1} s (creates took {:.1} s)",
        created_in.as_secs_f64()
    );
    println!(
        "  phase 2 in-place rollout    {w2:.1} s (patches took {:.1} s)",
        patched_in.as_secs_f64()
    );
    for (label, cpu, sb, me, wall) in [
        ("phase 1", cpu1 - cpu0, sb1 - sb0, me1 - me0, w1),
        ("phase 2", cpu2 - cpu1, sb2 - sb1, me2 - me1, w2),
        ("total", cpu2 - cpu0, sb2 - sb0, me2 - me0, w1 + w2),
    ] {
        println!(
            "  {label:<8} CPU s            controller {cpu:.2} ({:.1}% of wall), sandbox {sb:.2} ({:.0}%), bench {me:.2} ({:.0}%); \
             controller per sandbox CPU s {:.3}",
            100.0 * cpu / wall,
            100.0 * sb / wall,
            100.0 * me / wall,
            cpu / sb,
        );
    }
    println!(
        "  controller RSS              {rss1:.1} MiB after phase 1, {rss2:.1} MiB after phase 2, peak (VmHWM) {peak:.1} MiB"
    );
    // A thread that ended between two readings takes its count with it: saturate.
    let (wk1, wk2) = (wake1.saturating_sub(wake0), wake2.saturating_sub(wake1));
    let requests = |c: &BTreeMap<String, u64>| total(c).max(1) as f64;
    println!(
        "  controller wake-ups         phase 1 {} ({:.2} per request), phase 2 {} ({:.2} per request)",
        wk1,
        wk1 as f64 / requests(&diff(&startup, &counts1)),
        wk2,
        wk2 as f64 / requests(&diff(&counts1, &counts2)),
    );
    println!(
        "  reconciles                  phase 1 {:.0}, phase 2 {:.0}; in-place updates {:.0}",
        metric(&metrics1, "tapp_controller_reconcile_total"),
        metric(&metrics2, "tapp_controller_reconcile_total")
            - metric(&metrics1, "tapp_controller_reconcile_total"),
        metric(&metrics2, "tapp_controller_pod_updates_total"),
    );
    println!(
        "  API requests (controller → proxy → sandbox, HTTP request heads counted; watches once):"
    );
    print_counts("startup", &startup, pods_total);
    print_counts("phase 1", &diff(&startup, &counts1), pods_total);
    print_counts("phase 2", &diff(&counts1, &counts2), pods_total);
    print_counts("total", &counts2, pods_total);
    let summary = Summary {
        walls: (w1, w2),
        controller_cpu: cpu2 - cpu0,
        sandbox_cpu: sb2 - sb0,
        peak_rss: peak,
    };
    let yes = |ok: bool| if ok { "yes" } else { "NO" };
    println!(
        "  targets                     peak RSS < 64 MiB: {}, CPU < 10% of wall: {}",
        yes(summary.peak_rss < 64.0),
        yes(summary.share_of_wall() < 0.10)
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_medians() {
        let f = |v: f64| format!("{v:.1}");
        assert_eq!(spread([], f), "-");
        assert_eq!(spread([2.0], f), "2.0");
        assert_eq!(spread([3.0, 1.0, 2.0], f), "1.0–3.0 (median 2.0)");
        assert_eq!(spread([4.0, 1.0, 2.0, 3.0], f), "1.0–4.0 (median 2.5)");
        let s = Summary {
            walls: (20.0, 30.0),
            controller_cpu: 5.0,
            sandbox_cpu: 50.0,
            peak_rss: 55.0,
        };
        assert_eq!(s.wall(), 50.0);
        assert!((s.share_of_wall() - 0.1).abs() < 1e-12);
        assert!((s.per_sandbox() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn isolation_gives_the_sandbox_the_first_cpu() {
        let iso = |l: &str| Isolation::split(l).map_err(|e| e.to_string());
        let ok = |s: &str, o: &str, count| {
            Ok(Isolation {
                sandbox: s.into(),
                others: o.into(),
                count,
            })
        };
        assert_eq!(iso("0-1"), ok("0", "1", 2));
        assert_eq!(iso("2,4-6"), ok("2", "4,5,6", 4));
        assert_eq!(iso("3,1"), ok("3", "1", 2));
        assert!(iso("0").is_err_and(|e| e.contains("at least two CPUs")));
        assert!(iso("a-b").is_err());
    }

    #[test]
    fn classifies_requests() {
        assert_eq!(
            classify("GET", "/api/v1/pods?labelSelector=x&watch=true"),
            "GET pods watch"
        );
        assert_eq!(
            classify("GET", "/api/v1/namespaces/default/pods?limit=500"),
            "GET pods list"
        );
        assert_eq!(
            classify("PATCH", "/api/v1/namespaces/default/pods/t1-0/status"),
            "PATCH pods/status"
        );
        assert_eq!(
            classify("PATCH", "/apis/apps.tkestack.io/v1/namespaces/d/tapps/t1"),
            "PATCH tapps"
        );
        assert_eq!(
            classify("POST", "/apis/events.k8s.io/v1/namespaces/d/events"),
            "POST events"
        );
    }

    #[test]
    fn counts_pipelined_requests_with_bodies() {
        let counts: Counts = Arc::default();
        let (mut buf, mut left) = (Vec::new(), 0);
        let a = b"POST /api/v1/namespaces/d/pods HTTP/1.1\r\ncontent-length: 5\r\n\r\nhel";
        buf.extend_from_slice(a);
        assert!(count_requests(&mut buf, &mut left, &counts));
        buf.extend_from_slice(b"loGET /api/v1/pods HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(count_requests(&mut buf, &mut left, &counts));
        let c = counts.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(c.get("POST pods"), Some(&1));
        assert_eq!(c.get("GET pods list"), Some(&1));
        assert!(buf.is_empty());
    }
}
