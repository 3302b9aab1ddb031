//! Command-line flag groups every controller binary flattens into its own clap `Args`.
//!
//! Every flag can also be set through the environment variable shown in `--help`, so the
//! charts configure the controllers with `env:` as well as `args:`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

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

/// HTTPS address of every add-on's admission webhook unless `--webhook-address` says otherwise.
pub const DEFAULT_WEBHOOK_ADDRESS: &str = "0.0.0.0:8443";

/// The admission webhook of an add-on that has one: HTTPS, served by every replica (leading
/// or not), the same flags in every add-on. `--webhook-address=""` turns it off.
///
/// The serving certificate comes from the first of:
/// 1. `--webhook-cert-dir`: `tls.crt` and `tls.key` of a directory (a mounted
///    `kubernetes.io/tls` Secret written by Helm or cert-manager), re-read when they change;
/// 2. `--webhook-tls-cert-file` and `--webhook-tls-key-file`: two PEM files, re-read when
///    they change;
/// 3. otherwise a self-managed certificate: a CA and a serving certificate for the
///    `--webhook-service` kept in the Secret `--webhook-cert-secret` (created when missing,
///    renewed before it expires) and the CA patched into the `caBundle` of
///    `--webhook-config-name`.
///
/// Names left unset default to the component's ([`crate::webhook::CertSource::of`]).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct WebhookArgs {
    /// HTTPS address of the admission webhook (every replica serves it); empty turns it off.
    #[arg(
        id = "webhook_address",
        long = "webhook-address",
        env = "WEBHOOK_ADDRESS",
        value_name = "ADDRESS",
        default_value = DEFAULT_WEBHOOK_ADDRESS,
        value_parser = parse_optional_address
    )]
    pub address: ::std::option::Option<SocketAddr>,

    /// Namespace of the webhook Service and of the self-managed certificate's Secret.
    /// Defaults to $POD_NAMESPACE, then kube-system.
    #[arg(
        id = "webhook_namespace",
        long = "webhook-namespace",
        env = "WEBHOOK_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// Name of the webhook Service: the self-managed certificate's DNS names
    /// (<service>.<namespace>.svc) and the webhooks whose caBundle is patched. Defaults to
    /// the component name.
    #[arg(
        id = "webhook_service",
        long = "webhook-service",
        env = "WEBHOOK_SERVICE",
        value_name = "NAME"
    )]
    pub service: Option<String>,

    /// Secret holding the self-managed CA and serving certificate (created when missing,
    /// renewed 30 days before expiry). Defaults to <component>-webhook-cert.
    #[arg(
        id = "webhook_cert_secret",
        long = "webhook-cert-secret",
        env = "WEBHOOK_CERT_SECRET",
        value_name = "NAME"
    )]
    pub cert_secret: Option<String>,

    /// Webhook configuration whose caBundle gets the self-managed CA; empty: don't patch.
    /// Defaults to the component name.
    #[arg(
        id = "webhook_config_name",
        long = "webhook-config-name",
        env = "WEBHOOK_CONFIG_NAME",
        value_name = "NAME"
    )]
    pub config_name: Option<String>,

    /// Serve tls.crt and tls.key of this directory (a mounted kubernetes.io/tls Secret),
    /// re-read when they change, instead of a self-managed certificate.
    #[arg(
        id = "webhook_cert_dir",
        long = "webhook-cert-dir",
        env = "WEBHOOK_CERT_DIR",
        value_name = "DIR",
        conflicts_with_all = ["webhook_tls_cert_file", "webhook_tls_key_file"]
    )]
    pub cert_dir: Option<PathBuf>,

    /// Serve this certificate (PEM, with --webhook-tls-key-file), re-read when it changes,
    /// instead of a self-managed certificate.
    #[arg(
        id = "webhook_tls_cert_file",
        long = "webhook-tls-cert-file",
        env = "WEBHOOK_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "webhook_tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// Key (PEM) of --webhook-tls-cert-file.
    #[arg(
        id = "webhook_tls_key_file",
        long = "webhook-tls-key-file",
        env = "WEBHOOK_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "webhook_tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for WebhookArgs {
    fn default() -> Self {
        Self {
            address: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
            namespace: None,
            service: None,
            cert_secret: None,
            config_name: None,
            cert_dir: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// An address, or nothing for an empty value (the switch that turns a server off).
fn parse_optional_address(s: &str) -> std::result::Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{e} (an address such as 0.0.0.0:8443, or empty to turn it off)"))
}

/// The async runtime of a controller binary ([`crate::runtime::block_on`]). Unset flags take
/// the component's [`crate::runtime::RuntimeDefaults`], whose reasons its `main.rs` states.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeArgs {
    /// Async runtime worker threads; 1 runs everything on one thread (no cross-thread
    /// wake-ups, no work stealing). Defaults to the component's setting (its docs' flag
    /// table): 1 for tapp-controller, one per CPU for the others.
    #[arg(long = "runtime-threads", env = "RUNTIME_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Wake-up coalescing: when the runtime runs out of work less than this long after it
    /// was last woken, it waits out the rest before reading the network again, so events
    /// arriving meanwhile are handled in one round (fewer wake-ups per event in bursts, at
    /// most this much latency per request; a quiet process is not delayed). 0 disables.
    /// Defaults to the component's setting: 2ms for tapp-controller, 0 for the others.
    #[arg(long = "coalesce-wakeups", env = "COALESCE_WAKEUPS", value_name = "DURATION", value_parser = parse_duration)]
    pub coalesce_wakeups: Option<Duration>,
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

    #[derive(Parser, Debug)]
    struct WebhookCli {
        #[command(flatten)]
        webhook: WebhookArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn parse_webhook(args: &[&str]) -> std::result::Result<WebhookCli, clap::Error> {
        WebhookCli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn webhook_and_runtime_flags_are_consistent() {
        use clap::CommandFactory;
        WebhookCli::command().debug_assert();
    }

    #[test]
    fn webhook_defaults_to_8443_and_an_empty_address_turns_it_off() {
        let vars = ["WEBHOOK_ADDRESS", "WEBHOOK_CERT_DIR", "RUNTIME_THREADS"];
        if vars.iter().any(|v| std::env::var_os(v).is_some()) {
            return;
        }
        let cli = parse_webhook(&[]).expect("no flags parse");
        assert_eq!(cli.webhook, WebhookArgs::default());
        assert_eq!(
            cli.webhook.address,
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        assert_eq!(DEFAULT_WEBHOOK_ADDRESS, "0.0.0.0:8443");
        assert_eq!(cli.runtime, RuntimeArgs::default());
        for off in [&["--webhook-address="][..], &["--webhook-address", ""]] {
            let cli = parse_webhook(off).expect("empty address parses");
            assert_eq!(cli.webhook.address, None, "{off:?} turns the webhook off");
        }
        let err = parse_webhook(&["--webhook-address", "8443"]).expect_err("needs a host");
        assert!(err.to_string().contains("--webhook-address"), "{err}");
    }

    #[test]
    fn every_webhook_and_runtime_flag_parses() {
        let cli = parse_webhook(&[
            "--webhook-address=127.0.0.1:9443",
            "--webhook-namespace=ops",
            "--webhook-service=svc",
            "--webhook-cert-secret=sec",
            "--webhook-config-name=",
            "--webhook-tls-cert-file=/c.pem",
            "--webhook-tls-key-file=/k.pem",
            "--runtime-threads=4",
            "--coalesce-wakeups=0",
        ])
        .expect("all flags parse");
        let w = cli.webhook;
        assert_eq!(w.address, Some("127.0.0.1:9443".parse().expect("addr")));
        assert_eq!(w.namespace.as_deref(), Some("ops"));
        assert_eq!(w.service.as_deref(), Some("svc"));
        assert_eq!(w.cert_secret.as_deref(), Some("sec"));
        assert_eq!(w.config_name.as_deref(), Some(""));
        assert_eq!(w.tls_cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(w.tls_key_file, Some(PathBuf::from("/k.pem")));
        assert_eq!(cli.runtime.threads, Some(4));
        assert_eq!(cli.runtime.coalesce_wakeups, Some(Duration::ZERO));
        let cli = parse_webhook(&["--webhook-cert-dir", "/certs"]).expect("cert dir");
        assert_eq!(cli.webhook.cert_dir, Some(PathBuf::from("/certs")));
    }

    #[test]
    fn webhook_certificate_options_exclude_each_other() {
        // A directory or two files, not both; a certificate file needs its key.
        assert!(
            parse_webhook(&[
                "--webhook-cert-dir=/d",
                "--webhook-tls-cert-file=/c",
                "--webhook-tls-key-file=/k"
            ])
            .is_err()
        );
        assert!(parse_webhook(&["--webhook-tls-cert-file=/c"]).is_err());
        assert!(parse_webhook(&["--webhook-tls-key-file=/k"]).is_err());
        assert!(parse_webhook(&["--runtime-threads=0"]).is_err());
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
