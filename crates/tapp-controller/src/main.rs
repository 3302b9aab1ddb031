//! `tapp-controller`: the TApp controller and its validating admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;

use addon_common::cli::CommonArgs;
use addon_common::runtime::Process;
use addon_common::webhook::{
    ReloadableTls, SecretCerts, WebhookConfig, serve_https, server_config,
};
use anyhow::Context as _;
use clap::Parser;
use tapp_controller::controller::{self, COMPONENT, Config};
use tapp_controller::metrics::Metrics;
use tapp_controller::plan::Flags;
use tapp_controller::webhook;

/// jemalloc: with glibc's allocator the pod cache's churn (every watch event replaces a cached
/// pod) leaves the heap fragmented; docs/tapp.md §Performance has the figures.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// When the cluster serves pods/resize, resize in place; `auto` discovers it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Resize {
    Auto,
    Enabled,
    Disabled,
}

#[derive(Parser, Debug)]
#[command(name = COMPONENT, version, about = "TApp controller (apps.tkestack.io/v1), wire-compatible with tkestack/tapp")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// TApps reconciled at the same time (the original's flag; each reconcile sends its pod
    /// writes in parallel, so this bounds the API requests in flight and the connections).
    #[arg(long = "worker", env = "WORKERS", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,

    /// Keep finished (Succ/Failed) batch pods until the whole TApp has finished (the original's flag).
    #[arg(long, env = "DELETE_POD_AFTER_APP_FINISH", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    delete_pod_after_app_finish: bool,

    /// In-place resource resize through the pod `resize` subresource.
    #[arg(long, env = "IN_PLACE_RESIZE", value_enum, default_value_t = Resize::Auto)]
    in_place_resize: Resize,

    /// Watch nodes, so pods of lost nodes are force-deleted (`forceDeletePod`).
    #[arg(long, env = "WATCH_NODES", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    watch_nodes: bool,

    /// Serve the validating admission webhook (HTTPS) on this address; empty disables it.
    #[arg(long, env = "WEBHOOK_ADDRESS", default_value = "0.0.0.0:8443")]
    webhook_address: String,

    /// Namespace of the webhook Service and certificate Secret. Defaults to $POD_NAMESPACE, then kube-system.
    #[arg(long, env = "WEBHOOK_NAMESPACE")]
    webhook_namespace: Option<String>,

    /// Name of the webhook Service (certificate DNS names).
    #[arg(long, env = "WEBHOOK_SERVICE", default_value = "tapp-controller")]
    webhook_service: String,

    /// Secret holding the self-generated CA and serving certificate (created when missing, renewed 30 days before expiry).
    #[arg(
        long,
        env = "WEBHOOK_CERT_SECRET",
        default_value = "tapp-controller-webhook-cert"
    )]
    webhook_cert_secret: String,

    /// ValidatingWebhookConfiguration whose caBundle is patched with the generated CA; empty: don't patch.
    #[arg(long, env = "WEBHOOK_CONFIG_NAME", default_value = "tapp-controller")]
    webhook_config_name: String,

    /// Serve this certificate (PEM) instead of a self-generated one (with --webhook-tls-key-file).
    #[arg(long, env = "WEBHOOK_TLS_CERT_FILE", requires = "webhook_tls_key_file")]
    webhook_tls_cert_file: Option<PathBuf>,

    /// Key (PEM) of --webhook-tls-cert-file.
    #[arg(long, env = "WEBHOOK_TLS_KEY_FILE", requires = "webhook_tls_cert_file")]
    webhook_tls_key_file: Option<PathBuf>,

    /// Async runtime worker threads. The controller waits on the API server almost all the
    /// time: with 1 (the default) everything runs on a single-threaded runtime, which spares
    /// cross-thread wake-ups and work stealing (docs/tapp.md §Performance has the figures).
    #[arg(long, env = "RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    runtime_threads: u16,

    /// Wake-up coalescing: when the controller runs out of work less than this long after it
    /// was last woken, it waits out the rest before reading the network again, so watch events
    /// and responses arriving meanwhile are handled in one round (fewer wake-ups and system
    /// calls per event during rollouts, at most this much latency per request; a quiet
    /// controller is not delayed). 0 disables.
    #[arg(long, env = "COALESCE_WAKEUPS", default_value = "2ms", value_parser = addon_common::cli::parse_duration)]
    coalesce_wakeups: std::time::Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = if args.runtime_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(args.runtime_threads));
        b
    };
    addon_common::wakeups::coalesce(&mut builder, args.coalesce_wakeups);
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    addon_common::telemetry::init(&args.common.log, COMPONENT, env!("CARGO_PKG_VERSION"))?;
    let process = Process::start(COMPONENT, &args.common).await?;
    let metrics = Metrics::register(&process.registry)?;

    if !args.webhook_address.is_empty() {
        start_webhook(&args, &process, metrics.clone()).await?;
    }

    let resize_supported = match args.in_place_resize {
        Resize::Enabled => true,
        Resize::Disabled => false,
        Resize::Auto => controller::discover_resize(&process.client).await,
    };
    tracing::info!(resize_supported, "in-place resource resize");
    let config = Config {
        flags: Flags {
            delete_pod_after_app_finish: args.delete_pod_after_app_finish,
            resize_supported,
        },
        namespace: args.common.watch.watch_namespace.clone(),
        watch_nodes: args.watch_nodes,
        workers: args.workers,
    };
    let deps = process.deps();
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    Ok(())
}

async fn start_webhook(args: &Args, process: &Process, metrics: Metrics) -> anyhow::Result<()> {
    let addr: SocketAddr = args.webhook_address.parse().context("--webhook-address")?;
    let router = webhook::router(Some(metrics));
    let stop = process.shutdown.clone();
    if let (Some(cert), Some(key)) = (&args.webhook_tls_cert_file, &args.webhook_tls_key_file) {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let tls = ReloadableTls::new(server_config(&read(cert)?, &read(key)?)?);
        let (local, _) = serve_https(addr, router, tls, stop).await?;
        tracing::info!(%local, "webhook serving a provided certificate");
        return Ok(());
    }
    let namespace = args
        .webhook_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "kube-system".into());
    let certs = SecretCerts {
        client: process.client.clone(),
        namespace,
        secret: args.webhook_cert_secret.clone(),
        service: args.webhook_service.clone(),
        not_after_annotation: webhook::NOT_AFTER_ANNOTATION.into(),
        webhook_config: Some(args.webhook_config_name.clone())
            .filter(|s| !s.is_empty())
            .map(WebhookConfig::Validating),
    };
    // Creates or loads (renewing when due) the Secret, patches the caBundle, then re-reads
    // the Secret hourly and swaps a renewed certificate without a restart.
    let tls = certs
        .start(stop.clone())
        .await
        .context("webhook certificate")?;
    let (local, _) = serve_https(addr, router, tls, stop).await?;
    tracing::info!(%local, secret = %certs.secret, "webhook serving a self-managed certificate");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_defaults_match_the_original() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["tapp-controller"]).expect("defaults parse");
        assert!(args.delete_pod_after_app_finish);
        assert_eq!(args.in_place_resize, Resize::Auto);
        assert_eq!(args.webhook_address, "0.0.0.0:8443");
        assert_eq!(args.workers, 5);
        assert!(Args::try_parse_from(["tapp-controller", "--worker=0"]).is_err());
        assert_eq!(args.coalesce_wakeups, std::time::Duration::from_millis(2));
        let off = Args::try_parse_from(["tapp-controller", "--coalesce-wakeups=0"]).expect("0");
        assert!(off.coalesce_wakeups.is_zero(), "0 disables coalescing");
        let args = Args::try_parse_from([
            "tapp-controller",
            "--delete-pod-after-app-finish=false",
            "--webhook-address=",
            "--watch-namespace=a",
        ])
        .expect("flags parse");
        assert!(!args.delete_pod_after_app_finish);
        assert!(args.webhook_address.is_empty());
        assert_eq!(args.common.watch.watch_namespace.as_deref(), Some("a"));
    }
}
