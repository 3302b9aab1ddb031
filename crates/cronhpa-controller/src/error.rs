//! The crate's one error type.

use addon_common::api::cronhpa::{REASON_FAILED_GET_SCALE, REASON_FAILED_RESCALE};
use addon_common::kube;

/// Errors of the CronHPA controller and webhook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target's kind could not be found through discovery.
    #[error("cannot find {kind} in {api_version} through discovery: {source}")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },

    /// The target's kind has no scale subresource.
    #[error("{kind} ({api_version}) has no scale subresource")]
    NoScaleSubresource { api_version: String, kind: String },

    /// Reading the target's scale (or the HPA) failed.
    #[error("cannot read the scale of {target}: {source}")]
    GetScale {
        target: String,
        #[source]
        source: kube::Error,
    },

    /// Writing the target's scale (or the HPA) failed.
    #[error("cannot scale {target} to {replicas}: {source}")]
    Rescale {
        target: String,
        replicas: i32,
        #[source]
        source: kube::Error,
    },

    /// Writing the CronHPA's status failed.
    #[error("cannot write the status of {object}: {source}")]
    Status {
        object: String,
        #[source]
        source: kube::Error,
    },

    /// Registering the controller's metrics failed.
    #[error("cannot register the metrics: {source}")]
    RegisterMetrics {
        #[source]
        source: addon_common::Error,
    },
}

impl Error {
    /// A short, stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Discovery { .. } => "discovery",
            Error::NoScaleSubresource { .. } => "no_scale_subresource",
            Error::GetScale { .. } => "get_scale",
            Error::Rescale { .. } => "rescale",
            Error::Status { .. } => "status",
            Error::RegisterMetrics { .. } => "register_metrics",
        }
    }

    /// The Event reason the original used for this failure.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::Rescale { .. } => REASON_FAILED_RESCALE,
            _ => REASON_FAILED_GET_SCALE,
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
