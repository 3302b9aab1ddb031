//! `cronhpa-controller`: the CronHPA controller and its validating webhook.

use std::{net::SocketAddr, path::PathBuf};

use addon_common::{cli::CommonArgs, runtime::Process, telemetry};
use anyhow::Context as _;
use chrono_tz::Tz;
use clap::Parser;
use cronhpa_controller::{
    controller::{self, Config},
    metrics::Metrics,
    schedule::parse_time_zone,
    webhook,
};

/// Cron-scheduled scaling of any scalable workload (TKEStack CronHPA).
#[derive(Parser, Debug)]
#[command(name = "cronhpa-controller", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

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

    /// Address of the HTTPS admission webhook.
    #[arg(long, env = "WEBHOOK_ADDRESS", default_value = "0.0.0.0:9443")]
    webhook_address: SocketAddr,

    /// Directory holding the webhook's tls.crt and tls.key. Without it the webhook is off.
    #[arg(long, env = "WEBHOOK_CERT_DIR", value_name = "DIR")]
    webhook_cert_dir: Option<PathBuf>,

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(
        &args.common.log,
        "cronhpa-controller",
        env!("CARGO_PKG_VERSION"),
    )?;
    let process = Process::start(controller::COMPONENT, &args.common).await?;
    let metrics = Metrics::register(&process.registry)?;
    if !args.clock_offset.is_zero() {
        tracing::warn!(offset = %args.clock_offset, "clock offset set: for tests only");
    }

    // The webhook runs on every replica, leading or not.
    if let Some(dir) = &args.webhook_cert_dir {
        // Re-read when the kubelet updates the mounted Secret.
        let tls = addon_common::webhook::cert_dir_tls(
            dir,
            addon_common::webhook::CERT_DIR_POLL,
            process.shutdown.clone(),
        )
        .await
        .context("webhook TLS")?;
        let (address, _task) = addon_common::webhook::serve_https(
            args.webhook_address,
            webhook::router(args.default_time_zone),
            tls,
            process.shutdown.clone(),
        )
        .await?;
        tracing::info!(%address, "admission webhook listening");
    } else {
        tracing::info!("no --webhook-cert-dir: admission webhook disabled");
    }

    let config = Config {
        namespace: args.common.watch.watch_namespace.clone(),
        clock_offset: args.clock_offset,
        default_tz: args.default_time_zone,
        concurrency: args.concurrency,
        read_ahead: args.read_ahead,
        ..Config::default()
    };
    tracing::info!(default_time_zone = %args.default_time_zone, namespace = ?config.namespace, "starting");
    let deps = process.deps();
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    Ok(())
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
}
