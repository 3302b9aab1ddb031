//! cronhpa-bench: N CronHPAs whose crons all fire in the same minute, against the sandbox.
//!
//! ```text
//! make bench            # every benchmark; this one alone (builds every binary first):
//! hack/bench.sh cronhpa-bench [--objects 10000] [--margin 40]
//! # or build what it starts and run it:
//! cargo build --release --bins -p e2e -p cronhpa-controller -p addon-bench
//! target/release/cronhpa-bench [--objects 10000] [--margin 40]
//! ```
//! Starts the `sandbox` binary (emulated API server) and the `cronhpa-controller` binary as
//! separate processes (found next to this executable), creates N TApps (scale-subresource
//! targets that no controller touches, so only the CronHPA path is measured) and N CronHPAs
//! whose one cron fires at the same wall-clock minute (real clock, no offset), then watches
//! the targets and reports how late each scale landed, plus the controller's CPU time and
//! RSS while idle and while firing (from /proc), and the CPU time of the sandbox and of the
//! benchmark itself (its watcher) over the same windows: all three share the machine.
//!
//! "Idle" ends `--read-ahead` + 2 s before the fire: from then on the controller reads the
//! targets ahead of the occurrence, which is counted with the firing.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use addon_bench::{free_port, install_crds, start_sandbox, usage};
use addon_common::api::{cronhpa::CronHPA, tapp::TApp};
use addon_common::kube;
use addon_common::testing::KillOnDrop;
use anyhow::{Context as _, bail};
use chrono::{DateTime, Timelike, Utc};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client,
    api::PostParams,
    config::KubeConfigOptions,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Lateness of N CronHPAs firing in the same minute")]
struct Args {
    /// Number of CronHPAs (and targets).
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Seconds between the end of object creation and the earliest minute the crons may use.
    #[arg(long, default_value_t = 40)]
    margin: u64,
    /// Directory holding the `sandbox` and `cronhpa-controller` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Passed to the controller's --read-ahead ("0s": read at the scheduled time).
    #[arg(long, default_value = "10s", value_parser = addon_common::cli::parse_duration)]
    read_ahead: Duration,
    /// Passed to the controller's --concurrency.
    #[arg(long, default_value_t = 256)]
    concurrency: u16,
}

/// A target as the benchmark's watcher decodes it: only `spec.replicas` (the rest of the
/// TApp is skipped while parsing, so the observer costs little next to what it measures).
#[derive(Clone, Debug, serde::Deserialize)]
struct Replicas {
    #[serde(default)]
    replicas: i32,
}

/// A CronHPA's status as the benchmark's watcher decodes it: only `lastScheduleTime`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LastSchedule {
    #[serde(default)]
    last_schedule_time: Option<DateTime<Utc>>,
}

/// CPU seconds of the controller, the sandbox and this process.
fn cpus(controller: u32, sandbox: u32) -> anyhow::Result<[f64; 3]> {
    Ok([
        usage(controller)?.0,
        usage(sandbox)?.0,
        usage(std::process::id())?.0,
    ])
}

/// The controller's `/metrics` (plain HTTP/1.0 over loopback).
async fn scrape(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

/// The value of the sample `name` (with its labels, exactly as exposed) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    addon_bench::percentile(sorted, p).unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = addon_common::testing::sibling_bin_dir(args.bin_dir.clone())?;
    let work = std::env::temp_dir().join(format!("cronhpa-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let kubeconfig = work.join("kubeconfig");

    let (sandbox, kc) =
        start_sandbox(Command::new(bin_dir.join("sandbox")), &bin_dir, &kubeconfig).await?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;

    install_crds(&client).await?;

    let n = args.objects;
    eprintln!("creating {n} TApps and {n} CronHPAs…");
    let create_start = Instant::now();
    let estimate = Duration::from_secs_f64(n as f64 / 1000.0 + 5.0);
    let earliest =
        Utc::now() + chrono::Duration::from_std(estimate + Duration::from_secs(args.margin))?;
    let fire: DateTime<Utc> = earliest
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .context("minute")?
        + chrono::Duration::minutes(1);
    let schedule = format!("{} {} * * *", fire.minute(), fire.hour());
    create_objects(&client, n, args.parallel, &schedule).await?;
    let created_in = create_start.elapsed();
    eprintln!(
        "created in {:.1}s; all crons fire at {fire} ({schedule})",
        created_in.as_secs_f64()
    );

    let admin_port = free_port()?;
    let controller = start_controller(&bin_dir, &kubeconfig, admin_port, &args)?;
    let pid = controller.0.id();
    let sandbox_pid = sandbox.0.id();

    // When each target reaches 3 replicas, and when each CronHPA's status shows the fire
    // (statuses are written off the fire path, after the scales).
    let targets: Api<kube::core::Object<Replicas, kube::core::NotUsed>> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<TApp>(&()),
    );
    let (watch_task, mut rx) = first_seen(targets, |t| t.spec.replicas == 3);
    let statuses: Api<kube::core::Object<serde::de::IgnoredAny, LastSchedule>> =
        Api::namespaced_with(
            client.clone(),
            "default",
            &kube::api::ApiResource::erase::<CronHPA>(&()),
        );
    let (status_task, mut status_rx) = first_seen(statuses, move |c| {
        c.status
            .as_ref()
            .and_then(|s| s.last_schedule_time)
            .is_some_and(|t| t == fire)
    });

    // Idle: from 5 s after start until read-ahead + 2 s before the fire.
    let quiet_before = args.read_ahead + Duration::from_secs(2);
    let until_fire = (fire - Utc::now()).to_std().unwrap_or_default();
    if until_fire < quiet_before + Duration::from_secs(8) {
        bail!("not enough time before the fire minute; raise --margin");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpus(pid, sandbox_pid)?;
    let idle_start = Instant::now();
    let idle_for = (fire - Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(quiet_before);
    tokio::time::sleep(idle_for).await;
    let cpu1 = cpus(pid, sandbox_pid)?;
    let (_, idle_rss, _) = usage(pid)?;
    let idle_secs = idle_start.elapsed().as_secs_f64();
    // Read-ahead window: until the scheduled time.
    tokio::time::sleep((fire - Utc::now()).to_std().unwrap_or_default()).await;
    let cpu_fire = cpus(pid, sandbox_pid)?;
    let firing_start = Instant::now();

    let mut lateness = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while lateness.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_name, at))) => {
                lateness.push((at - fire).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6)
            }
            _ => break,
        }
    }
    let firing_secs = firing_start.elapsed().as_secs_f64();
    let cpu2 = cpus(pid, sandbox_pid)?;
    let (_, rss, peak) = usage(pid)?;
    // Statuses: until every CronHPA records the fire (at most 60 s more).
    let mut status_lateness = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while status_lateness.len() < n {
        match tokio::time::timeout_at(deadline, status_rx.recv()).await {
            Ok(Some((_name, at))) => status_lateness
                .push((at - fire).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6),
            _ => break,
        }
    }
    let metrics = scrape(admin_port).await.unwrap_or_default();
    watch_task.abort();
    status_task.abort();
    drop(controller);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&work);

    lateness.sort_by(f64::total_cmp);
    status_lateness.sort_by(f64::total_cmp);
    print_report(&Figures {
        n,
        created_in,
        lateness: &lateness,
        status_lateness: &status_lateness,
        metrics: &metrics,
        cpu: [cpu0, cpu1, cpu_fire, cpu2],
        idle_secs,
        idle_rss,
        firing_secs,
        rss,
        peak,
        quiet_before,
    });
    if lateness.len() < n {
        bail!("only {} of {n} targets were scaled", lateness.len());
    }
    if status_lateness.len() < n {
        bail!(
            "only {} of {n} statuses recorded the fire",
            status_lateness.len()
        );
    }
    Ok(())
}

/// What one run measured, for [`print_report`]: CPU seconds (controller, sandbox, bench) at
/// the start of the idle window, its end, the scheduled time and the last scale.
struct Figures<'a> {
    n: usize,
    created_in: Duration,
    lateness: &'a [f64],
    status_lateness: &'a [f64],
    metrics: &'a str,
    cpu: [[f64; 3]; 4],
    idle_secs: f64,
    idle_rss: f64,
    firing_secs: f64,
    rss: f64,
    peak: f64,
    quiet_before: Duration,
}

/// Prints the figures of a run (latenesses sorted).
fn print_report(f: &Figures<'_>) {
    let Figures {
        n,
        created_in,
        lateness,
        status_lateness,
        metrics,
        cpu: [cpu0, cpu1, cpu_fire, cpu2],
        idle_secs,
        idle_rss,
        firing_secs,
        rss,
        peak,
        quiet_before,
    } = *f;
    let within = lateness.iter().filter(|l| **l <= 2.0).count();
    println!(
        "cronhpa-bench: {n} CronHPAs firing at the same minute (TApp targets, sandbox over loopback)"
    );
    println!(
        "  objects created in        {:.1} s",
        created_in.as_secs_f64()
    );
    println!("  scaled                    {} / {n}", lateness.len());
    println!(
        "  lateness p50 / p90 / p99  {:.3} / {:.3} / {:.3} s",
        percentile(lateness, 0.5),
        percentile(lateness, 0.9),
        percentile(lateness, 0.99)
    );
    println!(
        "  lateness max              {:.3} s",
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!("  within 2 s                {within} / {n}");
    println!(
        "  statuses written          {} / {n}, p50 / max {:.3} / {:.3} s after the scheduled time",
        status_lateness.len(),
        percentile(status_lateness, 0.5),
        status_lateness.last().copied().unwrap_or(f64::NAN)
    );
    // Completions per half second after the scheduled time: where the throughput goes.
    let mut per_half: Vec<usize> = Vec::new();
    for l in lateness {
        let bucket = (l.max(0.0) * 2.0) as usize;
        if per_half.len() <= bucket {
            per_half.resize(bucket + 1, 0);
        }
        per_half[bucket] += 1;
    }
    println!("  scales per 0.5 s          {per_half:?}");
    // The controller's own view: its lag histogram (scale completion minus scheduled time).
    let lag = |le: &str| {
        sample(
            metrics,
            &format!("cronhpa_controller_schedule_lag_seconds_bucket{{le=\"{le}\"}}"),
        )
        .unwrap_or(f64::NAN)
    };
    println!(
        "  controller lag histogram  ≤0.5 s {} · ≤1 s {} · ≤2 s {} · ≤5 s {} of {} (reconciles {})",
        lag("0.5"),
        lag("1"),
        lag("2"),
        lag("5"),
        sample(metrics, "cronhpa_controller_schedule_lag_seconds_count").unwrap_or(f64::NAN),
        sample(metrics, "cronhpa_controller_reconcile_total").unwrap_or(f64::NAN)
    );
    println!(
        "  controller idle           {:.3} CPU s over {idle_secs:.0} s ({:.2}% of a core), RSS {idle_rss:.1} MiB",
        cpu1[0] - cpu0[0],
        100.0 * (cpu1[0] - cpu0[0]) / idle_secs
    );
    println!(
        "  controller firing         {:.2} CPU s over {firing_secs:.1} s (from the scheduled time to the last scale), RSS {rss:.1} MiB, peak RSS {peak:.1} MiB",
        cpu2[0] - cpu_fire[0],
    );
    println!(
        "  controller read-ahead     {:.2} CPU s in the {:.0} s before the scheduled time",
        cpu_fire[0] - cpu1[0],
        quiet_before.as_secs_f64()
    );
    println!(
        "  CPU s controller / sandbox / bench: idle {:.2} / {:.2} / {:.2}, read-ahead {:.2} / {:.2} / {:.2}, firing {:.2} / {:.2} / {:.2}",
        cpu1[0] - cpu0[0],
        cpu1[1] - cpu0[1],
        cpu1[2] - cpu0[2],
        cpu_fire[0] - cpu1[0],
        cpu_fire[1] - cpu1[1],
        cpu_fire[2] - cpu1[2],
        cpu2[0] - cpu_fire[0],
        cpu2[1] - cpu_fire[1],
        cpu2[2] - cpu_fire[2]
    );
}

/// Creates `n` TApps with 0 replicas and a CronHPA for each, all firing on `schedule`.
async fn create_objects(
    client: &Client,
    n: usize,
    parallel: usize,
    schedule: &str,
) -> anyhow::Result<()> {
    let tapps: Api<TApp> = Api::namespaced(client.clone(), "default");
    let cronhpas: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<addon_common::api::cronhpa::CronHPA>(&()),
    );
    stream::iter(0..n)
        .map(|i| {
            let tapps = tapps.clone();
            let cronhpas = cronhpas.clone();
            let schedule = schedule.to_owned();
            async move {
                let tapp: TApp = serde_json::from_value(json!({
                    "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
                    "metadata": {"name": format!("t{i}")},
                    "spec": {"replicas": 0, "template": {"metadata": {"labels": {"app": format!("t{i}")}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
                }))?;
                tapps.create(&PostParams::default(), &tapp).await?;
                let cron: kube::api::DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
                    "metadata": {"name": format!("c{i}")},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "name": format!("t{i}")},
                             "crons": [{"schedule": schedule, "targetReplicas": 3}]}
                }))?;
                cronhpas.create(&PostParams::default(), &cron).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Starts the controller against the sandbox, its admin server on `admin_port`.
fn start_controller(
    bin_dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    admin_port: u16,
    args: &Args,
) -> anyhow::Result<KillOnDrop> {
    Ok(KillOnDrop(
        Command::new(bin_dir.join("cronhpa-controller"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args([
                "--leader-elect",
                "false",
                "--log-filter",
                "warn",
                "--webhook-address",
                "",
            ])
            .arg("--read-ahead")
            .arg(format!("{}ms", args.read_ahead.as_millis()))
            .arg("--concurrency")
            .arg(args.concurrency.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting cronhpa-controller (build it: cargo build --release -p cronhpa-controller)")?,
    ))
}

/// Watches `api` and sends each object's name with the time at which `reached` first held
/// for it.
fn first_seen<K>(
    api: Api<K>,
    reached: impl Fn(&K) -> bool + Send + 'static,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<(String, DateTime<Utc>)>,
)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(obj)) = stream.next().await {
            let name = obj.meta().name.clone().unwrap_or_default();
            if reached(&obj) && seen.insert(name.clone()) {
                let _ = tx.send((name, Utc::now()));
            }
        }
    });
    (task, rx)
}
