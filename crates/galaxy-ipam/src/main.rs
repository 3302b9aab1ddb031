//! galaxy-ipam: floating-IP allocation as a kube-scheduler extender.

use std::{net::IpAddr, net::SocketAddr, path::PathBuf};

use addon_common::{
    cli::{CommonArgs, RuntimeArgs},
    runtime::{self, Process, RuntimeDefaults},
};
use anyhow::Context;
use clap::Parser;
use galaxy_ipam::{
    config::PluginConf,
    controller::{self, READY_CHECK},
    metrics::Metrics,
    plugin::Slot,
    server::{self, ServerState},
};

const COMPONENT: &str = "galaxy-ipam";
const DEFAULT_CONFIG: &str = "/etc/galaxy/galaxy-ipam.json";

/// tokio's multi-threaded runtime (a worker per CPU), no wake-up coalescing: what galaxy-ipam
/// has always run on. Its HTTP servers answer the scheduler on every replica, and a
/// coalescing delay would add to each scheduling cycle; no measurement argues for another
/// setting.
const RUNTIME: RuntimeDefaults = RuntimeDefaults::MULTI_THREAD;

/// Floating-IP allocation as a kube-scheduler extender (TKEStack Galaxy IPAM compatible).
#[derive(Parser, Debug)]
#[command(name = COMPONENT, version)]
struct Args {
    /// Galaxy's JSON config file (`{"schedule_plugin": {...}}`). Without it (or when the default
    /// path does not exist) the pools come from the ConfigMap kube-system/floatingip-config,
    /// key floatingips.
    #[arg(long, env = "GALAXY_IPAM_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    /// Address both servers bind.
    #[arg(long, env = "GALAXY_IPAM_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,

    /// Port of the scheduler extender server.
    #[arg(long, env = "GALAXY_IPAM_PORT", default_value_t = 9040)]
    port: u16,

    /// Port of the REST API (and /metrics).
    #[arg(
        long = "api-port",
        env = "GALAXY_IPAM_API_PORT",
        default_value_t = 9041
    )]
    api_port: u16,

    /// Accepted for compatibility with Galaxy's flags; ignored (use --kubeconfig).
    #[arg(long, hide = true)]
    master: Option<String>,

    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true, default_missing_value = "true", num_args = 0..=1)]
    profiling: Option<bool>,

    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true, default_missing_value = "true", num_args = 0..=1)]
    swagger: Option<bool>,

    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn load_conf(path: &PathBuf) -> anyhow::Result<PluginConf> {
    match std::fs::read_to_string(path) {
        Ok(text) => PluginConf::parse(&text).with_context(|| format!("config {}", path.display())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && path.as_os_str() == DEFAULT_CONFIG =>
        {
            tracing::info!(path = %path.display(), "no config file: using the defaults");
            Ok(PluginConf::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = args.runtime.clone();
    runtime::block_on(&runtime, RUNTIME, run(args))?
}

/// No admission webhook: galaxy-ipam is a scheduler extender, so instead of a webhook it
/// serves the extender and the REST API on every replica; only the allocator ([`controller::run`])
/// waits for leadership.
async fn run(args: Args) -> anyhow::Result<()> {
    addon_common::telemetry::init(&args.common.log, COMPONENT, env!("CARGO_PKG_VERSION"))?;
    if args.master.is_some() || args.profiling.is_some() || args.swagger.is_some() {
        tracing::warn!(
            "--master, --profiling and --swagger are accepted for compatibility and ignored"
        );
    }
    let config = load_conf(&args.config)?;
    if !config.cloud_provider_grpc_addr.is_empty() {
        tracing::warn!(addr = %config.cloud_provider_grpc_addr, "cloudProviderGrpcAddr is not supported; IPs are not assigned through a cloud provider");
    }
    let process = Process::start(COMPONENT, &args.common).await?;
    let slot = Slot::default();
    let metrics = Metrics::register(&process.registry, slot.clone())?;
    process.health.set(READY_CHECK, false, "standby");
    let state = ServerState {
        slot: slot.clone(),
        metrics: metrics.clone(),
        registry: process.registry.clone(),
    };
    let servers_stop = tokio_util::sync::CancellationToken::new();
    let (ext, api) = server::start_servers(
        SocketAddr::new(args.bind, args.port),
        SocketAddr::new(args.bind, args.api_port),
        state,
        servers_stop.clone(),
    )
    .await?;
    let deps = process.deps();
    let config = controller::Config {
        plugin: config,
        slot,
    };
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    servers_stop.cancel();
    let _ = ext.task.await;
    let _ = api.task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_are_galaxys() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "galaxy-ipam",
            "--config",
            "/x.json",
            "--bind",
            "127.0.0.1",
            "--port",
            "1",
            "--api-port",
            "2",
            "--leader-elect",
            "false",
            "--master",
            "http://m",
            "--swagger",
            "--profiling",
        ])
        .expect("Galaxy's flags parse");
        assert_eq!((a.port, a.api_port), (1, 2));
        assert_eq!(a.config, PathBuf::from("/x.json"));
        assert!(!a.common.leader_election.leader_elect);
        assert_eq!(a.swagger, Some(true));
        let a = Args::try_parse_from(["galaxy-ipam", "--runtime-threads=2"]).expect("runtime");
        assert_eq!(a.runtime.threads, Some(2));
        assert!(
            Args::try_parse_from(["galaxy-ipam", "--webhook-address="]).is_err(),
            "no webhook, no webhook flags"
        );
    }

    #[test]
    fn missing_default_config_means_defaults() {
        let conf = load_conf(&PathBuf::from(DEFAULT_CONFIG));
        if std::path::Path::new(DEFAULT_CONFIG).exists() {
            return;
        }
        assert_eq!(conf.expect("defaults"), PluginConf::default());
        assert!(load_conf(&PathBuf::from("/nonexistent/galaxy-ipam.json")).is_err());
    }
}
