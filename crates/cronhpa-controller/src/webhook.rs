//! The validating admission webhook (`admission.k8s.io/v1`), served over HTTPS by every
//! replica on `POST /validate-cronhpa`.
//!
//! TLS (the plumbing and the flags are [`addon_common::webhook`]'s, shared by every add-on):
//! the chart passes `--webhook-cert-dir` (`tls.crt`, `tls.key`), a Secret it generates with
//! `genCA`/`genSignedCert` (reused across upgrades through `lookup`) together with the
//! `caBundle` of the ValidatingWebhookConfiguration, re-read when the kubelet updates the
//! mounted Secret. Without a directory or certificate files the controller manages its own
//! certificate in a Secret, as tapp-controller does. No key is committed anywhere.

use addon_common::kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};
use addon_common::{
    api::cronhpa::CronHPA,
    webhook::{ReviewMetrics, admission_handler_observed},
};
use axum::Router;
use chrono_tz::Tz;

use crate::validate::validate;

/// Path of the validating webhook.
pub const PATH: &str = "/validate-cronhpa";
/// Secret annotation holding a self-managed certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "extensions.tkestack.io/not-after";

/// Decides one admission request (pure).
pub fn review(req: &AdmissionRequest<DynamicObject>, default_tz: Tz) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = &req.object else {
        return response;
    };
    let parse =
        |o: &DynamicObject| serde_json::to_value(o).and_then(serde_json::from_value::<CronHPA>);
    let cronhpa = match parse(object) {
        Ok(c) => c,
        Err(e) => return response.deny(format!("malformed CronHPA: {e}")),
    };
    // Updates that leave the spec alone (labels, finalizers, ...) are always allowed, so an
    // object stored before the webhook existed can still be relabelled or deleted.
    if req.operation == Operation::Update
        && let Some(old) = req.old_object.as_ref().and_then(|o| parse(o).ok())
        && old.spec == cronhpa.spec
    {
        return response;
    }
    match validate(&cronhpa.spec, default_tz) {
        Ok(_) => response,
        Err(errors) => response.deny(crate::validate::summary(&errors)),
    }
}

/// The webhook's router (tests call it without TLS), counting answers in `reviews` when
/// given (`cronhpa_controller_webhook_requests_total{result}`).
pub fn router(default_tz: Tz, reviews: Option<ReviewMetrics>) -> Router {
    Router::new().route(
        PATH,
        admission_handler_observed(
            move |req: &AdmissionRequest<DynamicObject>| review(req, default_tz),
            move |outcome| {
                if let Some(r) = &reviews {
                    r.observe(outcome);
                }
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use addon_common::kube::core::admission::AdmissionReview;
    use serde_json::json;

    fn review_json(
        operation: &str,
        object: serde_json::Value,
        old: Option<serde_json::Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let v = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "42",
                "kind": {"group": "extensions.tkestack.io", "version": "v1", "kind": "CronHPA"},
                "resource": {"group": "extensions.tkestack.io", "version": "v1", "resource": "cronhpas"},
                "name": "c", "namespace": "default",
                "operation": operation,
                "userInfo": {},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(v).expect("review");
        review.try_into().expect("request")
    }

    fn cronhpa(schedule: &str) -> serde_json::Value {
        json!({
            "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "crons": [{"schedule": "0 20 * * 5", "targetReplicas": 60},
                          {"schedule": schedule, "targetReplicas": 30}]
            }
        })
    }

    #[test]
    fn admission_table() {
        let ok = review(&review_json("CREATE", cronhpa("0 23 * * 7"), None), Tz::UTC);
        assert!(ok.allowed);
        let bad = review(&review_json("CREATE", cronhpa("0 23 * * 8"), None), Tz::UTC);
        assert!(!bad.allowed);
        assert!(
            bad.result
                .message
                .contains(r#"spec.crons[1].schedule: invalid schedule "0 23 * * 8""#),
            "{}",
            bad.result.message
        );
        // An update changing the spec to something bad is denied…
        let upd = review(
            &review_json("UPDATE", cronhpa("nope"), Some(cronhpa("0 23 * * 7"))),
            Tz::UTC,
        );
        assert!(!upd.allowed);
        // …but one that keeps an (old, bad) spec unchanged is allowed.
        let keep = review(
            &review_json("UPDATE", cronhpa("nope"), Some(cronhpa("nope"))),
            Tz::UTC,
        );
        assert!(keep.allowed);
        // Malformed objects are denied with the decoding error.
        let mut malformed = cronhpa("0 23 * * 7");
        malformed["spec"]["crons"][0]["targetReplicas"] = json!("many");
        let resp = review(&review_json("CREATE", malformed, None), Tz::UTC);
        assert!(!resp.allowed);
        assert!(
            resp.result.message.contains("malformed CronHPA"),
            "{}",
            resp.result.message
        );
        // Deletes are not validated.
        let del = review(
            &review_json("DELETE", serde_json::Value::Null, Some(cronhpa("nope"))),
            Tz::UTC,
        );
        assert!(del.allowed);
    }
}
