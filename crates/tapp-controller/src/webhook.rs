//! The validating admission webhook (admission.k8s.io/v1): TApp validation on
//! `POST /validate/tapp`.
//!
//! TLS without committed keys (the plumbing is [`addon_common::webhook`]): every replica loads
//! (or, the first one, generates) a CA and a serving certificate kept in a Secret
//! (`--webhook-cert-secret`), serves HTTPS with it and patches the CA into the `caBundle` of
//! the ValidatingWebhookConfiguration (`--webhook-config-name`). The certificate is
//! regenerated when it expires within 30 days; replicas re-read the Secret every hour and swap
//! certificates without a restart. With `--webhook-tls-cert-file`/`--webhook-tls-key-file` an
//! externally managed certificate (cert-manager, helm) is served instead and nothing is patched.

use addon_common::kube::core::DynamicObject;
use addon_common::kube::core::admission::{AdmissionRequest, AdmissionResponse};
use addon_common::webhook::admission_handler_observed;
use axum::Router;

use crate::metrics::Metrics;
use crate::validate::validate_tapp;

/// Path of the webhook (the original's).
pub const PATH: &str = "/validate/tapp";
/// Secret annotation holding the certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "apps.tkestack.io/not-after";

/// Decides one admission request (pure): a TApp whose spec fails [`validate_tapp`] is
/// denied with every error, each naming its field.
pub fn review(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref() else {
        return response;
    };
    let value = serde_json::to_value(object).unwrap_or_default();
    let errors = validate_tapp(&value);
    if errors.is_empty() {
        response
    } else {
        let name = object.metadata.name.as_deref().unwrap_or("");
        response.deny(format!(
            "TApp.apps.tkestack.io {name:?} is invalid: {}",
            errors.join("; ")
        ))
    }
}

/// The webhook router: `POST /validate/tapp`, counting results in
/// `tapp_controller_webhook_requests_total{result}` when `metrics` is given.
pub fn router(metrics: Option<Metrics>) -> Router {
    Router::new().route(
        PATH,
        admission_handler_observed(review, move |outcome| {
            if let Some(m) = &metrics {
                m.webhook.observe(outcome);
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use addon_common::kube::core::admission::AdmissionReview;
    use serde_json::json;

    fn request_of(spec: serde_json::Value) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "r1", "kind": {"group": "apps.tkestack.io", "version": "v1", "kind": "TApp"},
                "resource": {"group": "apps.tkestack.io", "version": "v1", "resource": "tapps"},
                "name": "t", "namespace": "default", "operation": "CREATE",
                "userInfo": {"username": "u"},
                "object": {"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "metadata": {"name": "t"}, "spec": spec}}
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    #[test]
    fn reviews_allow_valid_and_deny_invalid_with_field_names() {
        let ok = review(&request_of(
            json!({"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}}}),
        ));
        assert!(ok.allowed);
        assert_eq!(ok.uid, "r1");
        let bad = review(&request_of(
            json!({"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}}, "updateStrategy": {"maxUnavailable": "0%"}}),
        ));
        assert!(!bad.allowed);
        assert!(
            bad.result
                .message
                .starts_with(r#"TApp.apps.tkestack.io "t" is invalid: "#),
            "{}",
            bad.result.message
        );
        assert!(
            bad.result
                .message
                .contains("spec.updateStrategy.maxUnavailable"),
            "{}",
            bad.result.message
        );
    }
}
