//! cronhpa-bench: N CronHPAs whose crons all fire in the same minute, against the sandbox.
//!
//! ```text
//! make bench            # or:
//! cargo build --release -p e2e -p cronhpa-controller --bins
//! target/release/cronhpa-bench [--objects 10000] [--margin 40]
//! ```
//! Starts the `sandbox` binary (emulated API server) and the `cronhpa-controller` binary as
//! separate processes (found next to this executable), creates N TApps (scale-subresource
//! targets that no controller touches, so only the CronHPA path is measured) and N CronHPAs
//! whose one cron fires at the same wall-clock minute (real clock, no offset), then watches
//! the targets and reports how late each scale landed, plus the controller's CPU time and
//! RSS while idle and while firing (from /proc).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use addon_common::api::{all_crds, tapp::TApp};
use anyhow::{Context as _, bail};
use chrono::{DateTime, Timelike, Utc};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
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
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds and (RSS, peak RSS) in MiB of a process.
fn usage(pid: u32) -> anyhow::Result<(f64, f64, f64)> {
    let u = addon_common::testing::process_usage(pid)?;
    Ok((u.cpu_seconds, u.rss_mib, u.peak_rss_mib))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .to_path_buf(),
    };
    let work = std::env::temp_dir().join(format!("cronhpa-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let kubeconfig = work.join("kubeconfig");

    let sandbox = Proc(
        Command::new(bin_dir.join("sandbox"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}/sandbox (build it: cargo build --release -p e2e)",
                    bin_dir.display()
                )
            })?,
    );
    addon_common::testing::wait_for_file(&kubeconfig, Duration::from_secs(30)).await?;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    // Let discovery settle.
    let tapps: Api<TApp> = Api::namespaced(client.clone(), "default");
    for _ in 0..100 {
        if tapps.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    let cronhpas: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<addon_common::api::cronhpa::CronHPA>(&()),
    );
    stream::iter(0..n)
        .map(|i| {
            let tapps = tapps.clone();
            let cronhpas = cronhpas.clone();
            let schedule = schedule.clone();
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
        .buffer_unordered(args.parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let created_in = create_start.elapsed();
    eprintln!(
        "created in {:.1}s; all crons fire at {fire} ({schedule})",
        created_in.as_secs_f64()
    );

    let controller = Proc(
        Command::new(bin_dir.join("cronhpa-controller"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--admin-address",
                "127.0.0.1:0",
                "--leader-elect",
                "false",
                "--log-filter",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting cronhpa-controller (build it: cargo build --release -p cronhpa-controller)")?,
    );
    let pid = controller.0.id();

    // Watch the targets: record when each one reaches 3 replicas.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, DateTime<Utc>)>();
    let watch_api = tapps.clone();
    let watch_task = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let stream = watcher(watch_api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(tapp)) = stream.next().await {
            let name = tapp.metadata.name.clone().unwrap_or_default();
            if tapp.spec.replicas == 3 && seen.insert(name.clone()) {
                let _ = tx.send((name, Utc::now()));
            }
        }
    });

    // Idle: from 5 s after start until 2 s before the fire.
    let until_fire = (fire - Utc::now()).to_std().unwrap_or_default();
    if until_fire < Duration::from_secs(10) {
        bail!("not enough time before the fire minute; raise --margin");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, _, _) = usage(pid)?;
    let idle_start = Instant::now();
    let idle_for = (fire - Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(2));
    tokio::time::sleep(idle_for).await;
    let (cpu1, idle_rss, _) = usage(pid)?;
    let idle_secs = idle_start.elapsed().as_secs_f64();

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
    let firing_secs = (Utc::now() - fire).num_milliseconds() as f64 / 1000.0 + 2.0;
    let (cpu2, rss, peak) = usage(pid)?;
    watch_task.abort();
    drop(controller);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&work);

    lateness.sort_by(f64::total_cmp);
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
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.9),
        percentile(&lateness, 0.99)
    );
    println!(
        "  lateness max              {:.3} s",
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!("  within 2 s                {within} / {n}");
    println!(
        "  controller idle           {:.3} CPU s over {idle_secs:.0} s ({:.2}% of a core), RSS {idle_rss:.1} MiB",
        cpu1 - cpu0,
        100.0 * (cpu1 - cpu0) / idle_secs
    );
    println!(
        "  controller firing         {:.2} CPU s over {firing_secs:.1} s, RSS {rss:.1} MiB, peak RSS {peak:.1} MiB",
        cpu2 - cpu1
    );
    if lateness.len() < n {
        bail!("only {} of {n} targets were scaled", lateness.len());
    }
    Ok(())
}
