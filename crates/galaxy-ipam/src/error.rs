//! The crate's one error type.

/// Errors of galaxy-ipam.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pool configuration (ConfigMap or `--config` file) is invalid.
    #[error("invalid floating IP configuration: {0}")]
    Config(String),

    /// A new configuration was refused because it would drop allocated IPs.
    #[error(
        "configuration refused: it would drop {} allocated IP(s) ({}); keeping the previous configuration",
        .0.len(),
        summarize(.0)
    )]
    ConfigDropsAllocated(Vec<String>),

    /// A key could not be parsed.
    #[error("invalid key {0:?}")]
    Key(String),

    /// A request (extender or REST API) is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// No IP is left for the pod on the node's subnet (or anywhere).
    #[error("{0}")]
    NoIpLeft(String),

    /// The pod cannot get an IP as configured (policy/workload mismatch, replicas reached).
    #[error("{0}")]
    Rejected(String),

    /// The node is unknown or has no InternalIP, or its subnet has no pool.
    #[error("{0}")]
    Node(String),

    /// The IP is held by another pod whose delete event has not been handled yet.
    #[error("{0}")]
    Conflict(String),

    /// This replica does not lead; the scheduler must retry (it will reach the leader).
    #[error("galaxy-ipam is not the leader or not ready yet; retry")]
    NotLeader,

    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Shared plumbing failed (metrics registry, admin server, client).
    #[error("{0}")]
    Common(#[from] addon_common::Error),

    /// A socket could not be bound or served.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn summarize(ips: &[String]) -> String {
    let mut out = ips.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if ips.len() > 10 {
        out.push_str(&format!(", … {} more", ips.len() - 10));
    }
    out
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::ConfigDropsAllocated(_) => "config_drops_allocated",
            Error::Key(_) => "key",
            Error::BadRequest(_) => "bad_request",
            Error::NoIpLeft(_) => "no_ip_left",
            Error::Rejected(_) => "rejected",
            Error::Node(_) => "node",
            Error::Conflict(_) => "conflict",
            Error::NotLeader => "not_leader",
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Common(_) => "common",
            Error::Io { .. } => "io",
        }
    }

    /// True for a Kubernetes API error with this HTTP status code.
    pub fn is_api_status(&self, code: u16) -> bool {
        matches!(self, Error::Kube(e) if api_code(e) == Some(code))
    }
}

/// The HTTP status code of a Kubernetes API error response.
pub fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_messages_clear() {
        let e = Error::ConfigDropsAllocated(vec!["10.0.0.2".into(), "10.0.0.3".into()]);
        assert_eq!(e.metric_label(), "config_drops_allocated");
        assert!(
            e.to_string()
                .contains("2 allocated IP(s) (10.0.0.2, 10.0.0.3)"),
            "{e}"
        );
        let many: Vec<String> = (0..12).map(|i| format!("10.0.0.{i}")).collect();
        assert!(
            Error::ConfigDropsAllocated(many)
                .to_string()
                .contains("… 2 more")
        );
        assert_eq!(Error::NotLeader.metric_label(), "not_leader");
    }
}
