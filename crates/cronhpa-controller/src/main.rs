//! `cronhpa-controller`: the CronHPA controller and its validating webhook.

use addon_common::{
    cli::{CommonArgs, RuntimeArgs, WebhookArgs},
    runtime::{self, Process, RuntimeDefaults},
    telemetry,
    webhook::{WebhookConfig, WebhookKind, serve_webhook},
};
use chrono_tz::Tz;
use clap::Parser;
use cronhpa_controller::{
    controller::{self, COMPONENT, Config},
    metrics::Metrics,
    schedule::parse_time_zone,
    webhook,
};

/// tokio's multi-threaded runtime (a worker per CPU), no wake-up coalescing: what the
/// controller has always run on. Coalescing would delay the writes that must leave at the
/// scheduled second, and no measurement argues for another setting.
const RUNTIME: RuntimeDefaults = RuntimeDefaults::MULTI_THREAD;

/// The validating webhook; a self-managed CA goes into this ValidatingWebhookConfiguration.
const WEBHOOK: WebhookKind = WebhookKind {
    config: WebhookConfig::Validating,
    not_after_annotation: webhook::NOT_AFTER_ANNOTATION,
};

/// Cron-scheduled scaling of any scalable workload (TKEStack CronHPA).
#[derive(Parser, Debug)]
#[command(name = COMPONENT, version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    webhook: WebhookArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,

    /// IANA time zone of CronHPAs without spec.timeZone.
    #[arg(long, env = "DEFAULT_TIME_ZONE", default_value = "UTC", value_parser = parse_time_zone)]
    default_time_zone: Tz,

    /// Reconciliations (and so scales) running at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 256)]
    concurrency: u16,

    /// How long before an occurrence the target is read, so that the write goes out at the
    /// scheduled second ("0s": read at the scheduled time).
    #[arg(long, env = "READ_AHEAD", default_value = "10s", value_parser = addon_common::cli::parse_duration)]
    read_ahead: std::time::Duration,

    /// TESTS ONLY: shift the controller's clock, e.g. "-90s" or "2h".
    #[arg(long, env = "CLOCK_OFFSET", hide = true, allow_hyphen_values = true, value_parser = parse_offset, default_value = "0s")]
    clock_offset: chrono::Duration,
}

fn parse_offset(s: &str) -> Result<chrono::Duration, String> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let d = addon_common::cli::parse_duration(rest)?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    Ok(if sign < 0 { -d } else { d })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = args.runtime.clone();
    runtime::block_on(&runtime, RUNTIME, run(args))?
}

async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init(&args.common.log, COMPONENT, env!("CARGO_PKG_VERSION"))?;
    let process = Process::start(COMPONENT, &args.common).await?;
    let metrics = Metrics::register(&process.registry)?;
    if !args.clock_offset.is_zero() {
        tracing::warn!(offset = %args.clock_offset, "clock offset set: for tests only");
    }
    let router = webhook::router(args.default_time_zone, Some(metrics.webhook.clone()));
    serve_webhook(&args.webhook, &process, router, WEBHOOK).await?;
    let config = config(&args);
    tracing::info!(default_time_zone = %args.default_time_zone, namespace = ?config.namespace, "starting");
    let deps = process.deps();
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    Ok(())
}

/// The controller's settings from the flags.
fn config(args: &Args) -> Config {
    Config {
        namespace: args.common.watch.watch_namespace.clone(),
        clock_offset: args.clock_offset,
        default_tz: args.default_time_zone,
        concurrency: args.concurrency,
        read_ahead: args.read_ahead,
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "cronhpa-controller",
            "--default-time-zone",
            "Asia/Shanghai",
            "--clock-offset",
            "-90s",
            "--webhook-cert-dir",
            "/certs",
            "--read-ahead",
            "3s",
        ])
        .expect("parse");
        assert_eq!(a.read_ahead, std::time::Duration::from_secs(3));
        assert_eq!(a.default_time_zone, Tz::Asia__Shanghai);
        assert_eq!(a.clock_offset, chrono::Duration::seconds(-90));
        let err = Args::try_parse_from(["cronhpa-controller", "--default-time-zone", "Nowhere/X"])
            .expect_err("bad zone");
        assert!(err.to_string().contains("--default-time-zone"), "{err}");
    }

    #[test]
    fn the_webhook_and_runtime_flags_are_the_shared_ones() {
        // Today's chart flags still parse; an empty address is the off switch.
        let a = Args::try_parse_from([
            "cronhpa-controller",
            "--webhook-address=0.0.0.0:8443",
            "--webhook-cert-dir=/etc/cronhpa-controller/webhook-tls",
        ])
        .expect("the chart's flags parse");
        assert_eq!(
            a.webhook.address,
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        let off = Args::try_parse_from(["cronhpa-controller", "--webhook-address="]).expect("off");
        assert_eq!(off.webhook.address, None);
        let runtime = runtime::build_runtime(&off.runtime, RUNTIME).expect("runtime");
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread,
            "the multi-threaded runtime #[tokio::main] built"
        );
    }
}
