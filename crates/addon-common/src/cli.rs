//! Command-line flag groups every controller binary flattens into its own clap `Args`.
//!
//! Every flag can also be set through the environment variable shown in `--help`, so the
//! charts configure the controllers with `env:` as well as `args:`.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{Error, Result};

/// How to reach the Kubernetes API server.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeArgs {
    /// Path to a kubeconfig file. Without it the client is inferred: $KUBECONFIG,
    /// ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<String>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long = "context", env = "KUBE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    /// Builds the client configuration these flags describe.
    pub async fn config(&self) -> Result<Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: path.clone(),
                        source,
                    })
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: "(default kubeconfig)".into(),
                        source,
                    })
            }
            None => Config::infer().await.map_err(Error::InferConfig),
        }
    }

    /// Builds a client from [`KubeArgs::config`].
    pub async fn client(&self) -> Result<Client> {
        Client::try_from(self.config().await?).map_err(Error::Kube)
    }
}

/// Which namespaces a controller watches.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchArgs {
    /// Watch only this namespace. Without it the controller watches the whole cluster.
    #[arg(
        long = "watch-namespace",
        env = "WATCH_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub watch_namespace: Option<String>,
}

/// The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AdminArgs {
    /// Address of the admin HTTP server (metrics and health probes).
    #[arg(
        long = "admin-address",
        env = "ADMIN_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_address: SocketAddr,
}

impl Default for AdminArgs {
    fn default() -> Self {
        Self {
            admin_address: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags. The filter uses `RUST_LOG` syntax (e.g. `info,kube=warn`).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter directives in RUST_LOG syntax.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Plain,
            log_filter: "info".into(),
        }
    }
}

/// Leader election through a `coordination.k8s.io/v1` Lease.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionArgs {
    /// Elect one active replica through a Lease; the others stand by.
    #[arg(
        long = "leader-elect",
        env = "LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub leader_elect: bool,

    /// Name of the Lease object. Defaults to the component name.
    #[arg(
        long = "leader-elect-lease-name",
        env = "LEADER_ELECT_LEASE_NAME",
        value_name = "NAME"
    )]
    pub lease_name: Option<String>,

    /// Namespace of the Lease object. Defaults to $POD_NAMESPACE, then kube-system.
    #[arg(
        long = "leader-elect-namespace",
        env = "LEADER_ELECT_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub lease_namespace: Option<String>,

    /// How long a lease is valid without renewal; standbys take over after it.
    #[arg(long = "leader-elect-lease-duration", env = "LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long = "leader-elect-renew-deadline", env = "LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// Interval between attempts to acquire or renew the lease.
    #[arg(long = "leader-elect-retry-period", env = "LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,
}

impl Default for LeaderElectionArgs {
    fn default() -> Self {
        Self {
            leader_elect: true,
            lease_name: None,
            lease_namespace: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderElectionArgs {
    /// Checks the timing rules of leader election: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<()> {
        if self.retry_period.is_zero() {
            return Err(Error::InvalidFlag(
                "--leader-elect-retry-period must be greater than zero".into(),
            ));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(Error::InvalidFlag(
                "--leader-elect-renew-deadline must be greater than --leader-elect-retry-period"
                    .into(),
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::InvalidFlag(
                "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The flags every controller binary shares.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// Parses a duration flag: a Go duration (`500ms`, `15s`, `2m`, `1h30m`, `1.5s`; see
/// [`crate::duration`]) that is not negative, or a bare number of seconds (`90`). Surrounding
/// white space is ignored.
pub fn parse_duration(input: &str) -> std::result::Result<Duration, String> {
    let s = input.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    crate::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn defaults_are_production_defaults() {
        // Env vars of the test process must not leak into the defaults.
        for var in [
            "KUBECONFIG",
            "WATCH_NAMESPACE",
            "ADMIN_ADDRESS",
            "LOG_FORMAT",
            "RUST_LOG",
            "LEADER_ELECT",
            "LEADER_ELECT_LEASE_DURATION",
        ] {
            if std::env::var_os(var).is_some() {
                return;
            }
        }
        let cli = parse(&[]).expect("no flags parse");
        assert_eq!(cli.common, CommonArgs::default());
        assert!(cli.common.leader_election.leader_elect);
        assert_eq!(cli.common.admin.admin_address.port(), 8080);
        cli.common
            .leader_election
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn every_flag_parses() {
        let cli = parse(&[
            "--kubeconfig",
            "/tmp/kc",
            "--context",
            "sandbox",
            "--watch-namespace",
            "team-a",
            "--admin-address",
            "127.0.0.1:9100",
            "--log-format",
            "json",
            "--log-filter",
            "debug,kube=warn",
            "--leader-elect",
            "false",
            "--leader-elect-lease-name",
            "my-lease",
            "--leader-elect-namespace",
            "ops",
            "--leader-elect-lease-duration",
            "30s",
            "--leader-elect-renew-deadline",
            "20s",
            "--leader-elect-retry-period",
            "500ms",
        ])
        .expect("all flags parse");
        let c = cli.common;
        assert_eq!(c.kube.kubeconfig.as_deref(), Some("/tmp/kc"));
        assert_eq!(c.kube.context.as_deref(), Some("sandbox"));
        assert_eq!(c.watch.watch_namespace.as_deref(), Some("team-a"));
        assert_eq!(
            c.admin.admin_address,
            "127.0.0.1:9100".parse().expect("addr")
        );
        assert_eq!(c.log.log_format, LogFormat::Json);
        assert_eq!(c.log.log_filter, "debug,kube=warn");
        assert!(!c.leader_election.leader_elect);
        assert_eq!(c.leader_election.lease_name.as_deref(), Some("my-lease"));
        assert_eq!(c.leader_election.lease_namespace.as_deref(), Some("ops"));
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(30));
        assert_eq!(c.leader_election.renew_deadline, Duration::from_secs(20));
        assert_eq!(c.leader_election.retry_period, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        let err = parse(&["--log-format", "xml"]).expect_err("xml is not a format");
        assert!(err.to_string().contains("--log-format"), "{err}");
        let err = parse(&["--admin-address", "localhost"]).expect_err("needs a port");
        assert!(err.to_string().contains("--admin-address"), "{err}");
        let err = parse(&["--leader-elect-lease-duration", "ten"]).expect_err("not a duration");
        assert!(
            err.to_string().contains("--leader-elect-lease-duration"),
            "{err}"
        );
    }

    #[test]
    fn leader_election_timing_is_validated() {
        let mut le = LeaderElectionArgs::default();
        le.renew_deadline = le.lease_duration;
        let err = le
            .validate()
            .expect_err("renew deadline must be below lease duration");
        assert!(
            err.to_string().contains("--leader-elect-lease-duration"),
            "{err}"
        );
        let mut le = LeaderElectionArgs::default();
        le.retry_period = le.renew_deadline;
        assert!(le.validate().is_err());
    }

    #[test]
    fn durations_parse_like_go() {
        let table = [
            ("15s", Duration::from_secs(15)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("90", Duration::from_secs(90)),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["", "s", "10x", "abc", "1..2s", "-5s", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
