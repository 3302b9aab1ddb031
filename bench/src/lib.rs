//! What the benchmark binaries (`src/bin/*-bench.rs`) share: a process's CPU time and memory,
//! a free loopback port, CRDs installed into a fresh sandbox, percentiles.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use addon_common::api::{all_crds, tapp::TApp};
use addon_common::testing::{KillOnDrop, read_kubeconfig};
use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, api::PostParams, config::Kubeconfig};

/// CPU seconds and (RSS, peak RSS) in MiB of a process, from `/proc`.
pub fn usage(pid: u32) -> anyhow::Result<(f64, f64, f64)> {
    let u = addon_common::testing::process_usage(pid)?;
    Ok((u.cpu_seconds, u.rss_mib, u.peak_rss_mib))
}

/// A free loopback port (for a controller's admin server).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the sandbox: `command` runs the `sandbox` binary of `bin_dir` (perhaps through
/// `taskset`) with the flags of the benchmark; this adds a free loopback port and
/// `--kubeconfig-out kubeconfig`, silences its output and waits (30 s at most) for the
/// kubeconfig it writes.
pub async fn start_sandbox(
    mut command: Command,
    bin_dir: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<(KillOnDrop, Kubeconfig)> {
    let child = command
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {}/sandbox (build it: cargo build --release -p e2e --bin sandbox)",
                bin_dir.display()
            )
        })?;
    let sandbox = KillOnDrop(child);
    let config = read_kubeconfig(kubeconfig, Duration::from_secs(30)).await?;
    Ok((sandbox, config))
}

/// Creates every CRD of the workspace, then waits (up to 5 s) until TApps can be listed:
/// the API server's discovery has taken the new kinds in.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let tapps: Api<TApp> = Api::namespaced(client.clone(), "default");
    for _ in 0..100 {
        if tapps.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `p`-quantile (0 to 1, nearest rank) of values sorted in ascending order; `None` when
/// there are none.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let idx = ((last as f64) * p).round() as usize;
    sorted.get(idx.min(last)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.9), Some(5.0));
        assert_eq!(percentile(&v, 1.0), Some(5.0));
        assert_eq!(percentile::<f64>(&[], 0.5), None);
        let d = [Duration::from_millis(1), Duration::from_millis(9)];
        assert_eq!(percentile(&d, 0.99), Some(Duration::from_millis(9)));
    }

    #[test]
    fn usage_of_this_process() {
        let (cpu, rss, peak) = usage(std::process::id()).expect("own /proc entry");
        assert!(cpu >= 0.0 && rss > 1.0 && peak >= rss, "{cpu} {rss} {peak}");
        assert_ne!(free_port().expect("a port"), 0);
    }
}
