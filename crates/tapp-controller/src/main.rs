//! `tapp-controller`: the TApp controller and its validating admission webhook.

use std::time::Duration;

use addon_common::cli::{CommonArgs, RuntimeArgs, WebhookArgs};
use addon_common::kube::Client;
use addon_common::runtime::{self, Process, RuntimeDefaults};
use addon_common::webhook::{WebhookConfig, WebhookKind, serve_webhook};
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

/// One thread with 2 ms wake-up coalescing, measured in docs/tapp.md §Performance: the
/// controller waits on the API server almost all the time, and tokio's single-threaded
/// runtime (no worker handoff, no work stealing) took another 5–10% off its CPU; coalescing
/// cut the rollout bench's CPU from 12.6–12.9 s to 10.5 s on a shared machine (it does not pay
/// with a CPU of its own: `--coalesce-wakeups 0` there).
const RUNTIME: RuntimeDefaults = RuntimeDefaults {
    threads: Some(1),
    coalesce_wakeups: Duration::from_millis(2),
};

/// The validating webhook; a self-managed CA goes into this ValidatingWebhookConfiguration.
const WEBHOOK: WebhookKind = WebhookKind {
    config: WebhookConfig::Validating,
    not_after_annotation: webhook::NOT_AFTER_ANNOTATION,
};

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

    #[command(flatten)]
    webhook: WebhookArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = args.runtime.clone();
    runtime::block_on(&runtime, RUNTIME, run(args))?
}

async fn run(args: Args) -> anyhow::Result<()> {
    addon_common::telemetry::init(&args.common.log, COMPONENT, env!("CARGO_PKG_VERSION"))?;
    let process = Process::start(COMPONENT, &args.common).await?;
    let metrics = Metrics::register(&process.registry)?;
    let router = webhook::router(Some(metrics.clone()));
    serve_webhook(&args.webhook, &process, router, WEBHOOK).await?;
    let config = config(&args, &process.client).await;
    let deps = process.deps();
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    Ok(())
}

/// The controller's settings from the flags (`auto` resize asks the API server).
async fn config(args: &Args, client: &Client) -> Config {
    let resize_supported = match args.in_place_resize {
        Resize::Enabled => true,
        Resize::Disabled => false,
        Resize::Auto => controller::discover_resize(client).await,
    };
    tracing::info!(resize_supported, "in-place resource resize");
    Config {
        flags: Flags {
            delete_pod_after_app_finish: args.delete_pod_after_app_finish,
            resize_supported,
        },
        namespace: args.common.watch.watch_namespace.clone(),
        watch_nodes: args.watch_nodes,
        workers: args.workers,
    }
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
        assert_eq!(
            args.webhook.address,
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        assert_eq!(args.workers, 5);
        assert!(Args::try_parse_from(["tapp-controller", "--worker=0"]).is_err());
        let runtime = addon_common::runtime::build_runtime(&args.runtime, RUNTIME).expect("rt");
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread,
            "one thread by default"
        );
        assert_eq!(RUNTIME.coalesce_wakeups, Duration::from_millis(2));
        let off = Args::try_parse_from(["tapp-controller", "--coalesce-wakeups=0"]).expect("0");
        assert_eq!(
            off.runtime.coalesce_wakeups,
            Some(Duration::ZERO),
            "0 disables coalescing"
        );
        let args = Args::try_parse_from([
            "tapp-controller",
            "--delete-pod-after-app-finish=false",
            "--webhook-address=",
            "--watch-namespace=a",
        ])
        .expect("flags parse");
        assert!(!args.delete_pod_after_app_finish);
        assert_eq!(
            args.webhook.address, None,
            "an empty address turns the webhook off"
        );
        assert_eq!(args.common.watch.watch_namespace.as_deref(), Some("a"));
        // The flags of the chart and the plain manifest.
        let args = Args::try_parse_from([
            "tapp-controller",
            "--webhook-address=0.0.0.0:8443",
            "--webhook-namespace=kube-system",
            "--webhook-service=tapp-controller",
            "--webhook-cert-secret=tapp-controller-webhook-cert",
            "--webhook-config-name=tapp-controller",
        ])
        .expect("the chart's webhook flags parse");
        assert_eq!(
            args.webhook.cert_secret.as_deref(),
            Some("tapp-controller-webhook-cert")
        );
    }
}
