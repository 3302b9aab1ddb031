//! The crate's one error type: one variant per failing operation, naming the object it was
//! about (`namespace/name`) and carrying the API error as its source.

use addon_common::kube;

/// Errors of the TApp controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TApp object lacks a namespace or uid.
    #[error("object without {0}")]
    MissingField(&'static str),

    /// Writing the defaults of a TApp (a merge patch of the TApp) failed.
    #[error("cannot write the defaults of TApp {tapp}: {source}")]
    PatchDefaults {
        tapp: String,
        #[source]
        source: kube::Error,
    },

    /// Writing the status of a TApp failed.
    #[error("cannot write the status of TApp {tapp}: {source}")]
    PatchStatus {
        tapp: String,
        #[source]
        source: kube::Error,
    },

    /// Creating an instance's pod failed.
    #[error("cannot create pod {pod}: {source}")]
    CreatePod {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Deleting a pod failed.
    #[error("cannot delete pod {pod}: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Patching a pod (in-place update of images, labels, annotations) failed.
    #[error("cannot patch pod {pod}: {source}")]
    PatchPod {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Resizing a pod's containers (the `resize` subresource) failed.
    #[error("cannot resize pod {pod}: {source}")]
    ResizePod {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Writing a pod's in-place readiness-gate condition (`pods/status`) failed.
    #[error("cannot write the readiness-gate condition of pod {pod}: {source}")]
    PatchPodCondition {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Creating an instance's claim failed.
    #[error("cannot create claim {claim}: {source}")]
    CreateClaim {
        claim: String,
        #[source]
        source: kube::Error,
    },

    /// Deleting a claim (`whenScaled: Delete`) failed.
    #[error("cannot delete claim {claim}: {source}")]
    DeleteClaim {
        claim: String,
        #[source]
        source: kube::Error,
    },

    /// Changing a claim's owner references (`whenDeleted`) failed.
    #[error("cannot patch the owner references of claim {claim}: {source}")]
    PatchClaim {
        claim: String,
        #[source]
        source: kube::Error,
    },

    /// Shared plumbing failed (metrics registry, client...).
    #[error(transparent)]
    Common(#[from] addon_common::Error),
}

impl Error {
    /// Label of the `tapp_controller_reconcile_errors_total{error}` metric: one per failing
    /// operation, stable across releases.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingField(_) => "invalid_object",
            Error::PatchDefaults { .. } => "patch_defaults",
            Error::PatchStatus { .. } => "patch_status",
            Error::CreatePod { .. } => "create_pod",
            Error::DeletePod { .. } => "delete_pod",
            Error::PatchPod { .. } => "patch_pod",
            Error::ResizePod { .. } => "resize_pod",
            Error::PatchPodCondition { .. } => "patch_pod_condition",
            Error::CreateClaim { .. } => "create_claim",
            Error::DeleteClaim { .. } => "delete_claim",
            Error::PatchClaim { .. } => "patch_claim",
            Error::Common(e) => e.metric_label(),
        }
    }

    /// The API error behind a failed operation, if any.
    pub fn api_error(&self) -> Option<&kube::Error> {
        match self {
            Error::PatchDefaults { source, .. }
            | Error::PatchStatus { source, .. }
            | Error::CreatePod { source, .. }
            | Error::DeletePod { source, .. }
            | Error::PatchPod { source, .. }
            | Error::ResizePod { source, .. }
            | Error::PatchPodCondition { source, .. }
            | Error::CreateClaim { source, .. }
            | Error::DeleteClaim { source, .. }
            | Error::PatchClaim { source, .. } => Some(source),
            Error::MissingField(_) | Error::Common(_) => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_has_its_own_label_and_names_its_object() {
        let api = || kube::Error::Api(kube::core::Status::failure("boom", "InternalError").boxed());
        let pod = || "ns/web-0".to_string();
        let claim = || "ns/data-web-0".to_string();
        let tapp = || "ns/web".to_string();
        let errors = [
            Error::MissingField("metadata.uid"),
            Error::PatchDefaults {
                tapp: tapp(),
                source: api(),
            },
            Error::PatchStatus {
                tapp: tapp(),
                source: api(),
            },
            Error::CreatePod {
                pod: pod(),
                source: api(),
            },
            Error::DeletePod {
                pod: pod(),
                source: api(),
            },
            Error::PatchPod {
                pod: pod(),
                source: api(),
            },
            Error::ResizePod {
                pod: pod(),
                source: api(),
            },
            Error::PatchPodCondition {
                pod: pod(),
                source: api(),
            },
            Error::CreateClaim {
                claim: claim(),
                source: api(),
            },
            Error::DeleteClaim {
                claim: claim(),
                source: api(),
            },
            Error::PatchClaim {
                claim: claim(),
                source: api(),
            },
        ];
        let labels: std::collections::BTreeSet<&str> =
            errors.iter().map(Error::metric_label).collect();
        assert_eq!(labels.len(), errors.len(), "labels are distinct");
        for e in &errors[1..] {
            let text = e.to_string();
            assert!(text.contains("ns/"), "{text} names its object");
            assert!(
                std::error::Error::source(e).is_some(),
                "{text} has a source"
            );
            assert!(e.api_error().is_some());
        }
    }
}
