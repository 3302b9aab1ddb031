//! The crate's one error type.

/// Errors of the TApp controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A JSON (de)serialization failed.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The TApp object lacks a namespace or name.
    #[error("object without {0}")]
    MissingField(&'static str),
    /// Shared plumbing failed.
    #[error(transparent)]
    Common(#[from] addon_common::Error),
}

impl Error {
    /// Label of the `tapp_controller_reconcile_errors_total{error}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 404 => "not_found",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube",
            Error::Serialization(_) => "serialization",
            Error::MissingField(_) => "invalid_object",
            Error::Common(e) => e.metric_label(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
