//! The error type of the shared crate.

/// Errors raised by the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// No client configuration could be inferred from the environment.
    #[error("cannot infer a Kubernetes client configuration: {0}")]
    InferConfig(#[source] kube::config::InferConfigError),

    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    /// A flag value is not acceptable.
    #[error("invalid flag: {0}")]
    InvalidFlag(String),

    /// A metric could not be registered (duplicate name, bad label).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),

    /// A socket could not be bound or served.
    #[error("{what} on {address}: {source}")]
    Io {
        what: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// Logging was initialised twice or with a bad filter.
    #[error("telemetry: {0}")]
    Telemetry(String),

    /// (De)serialisation of an object failed.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),

    /// TLS material (webhook certificates) could not be generated or loaded.
    #[error("webhook TLS: {0}")]
    Tls(String),

    /// The async runtime could not be started.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),

    /// Leader election could not reach a decision in time.
    #[error("leader election: {0}")]
    LeaderElection(String),
}

/// `Result` with the shared crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::InferConfig(_) => "infer_config",
            Error::Kube(_) => "kube",
            Error::InvalidFlag(_) => "invalid_flag",
            Error::Metrics(_) => "metrics",
            Error::Io { .. } => "io",
            Error::Telemetry(_) => "telemetry",
            Error::Serialization(_) => "serialization",
            Error::Tls(_) => "tls",
            Error::Runtime(_) => "runtime",
            Error::LeaderElection(_) => "leader_election",
        }
    }
}
