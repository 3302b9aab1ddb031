//! The validating admission webhook (`admission.k8s.io/v1`), served over HTTPS by every
//! replica on `POST /validate-cronhpa`.
//!
//! TLS: the serving certificate and key are read from `--webhook-cert-dir` (`tls.crt`,
//! `tls.key`), a Secret the Helm chart generates with `genCA`/`genSignedCert` (reused across
//! upgrades through `lookup`) together with the `caBundle` of the
//! ValidatingWebhookConfiguration. No key is committed anywhere.

use std::{net::SocketAddr, path::Path, sync::Arc};

use addon_common::api::cronhpa::CronHPA;
use axum::{Json, Router, extract::State, routing::post};
use chrono_tz::Tz;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, validate::validate};

/// Path of the validating webhook.
pub const PATH: &str = "/validate-cronhpa";

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

/// The webhook's router (tests call it without TLS).
pub fn router(default_tz: Tz) -> Router {
    Router::new()
        .route(PATH, post(handle))
        .with_state(Arc::new(default_tz))
}

async fn handle(
    State(default_tz): State<Arc<Tz>>,
    Json(body): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let req: AdmissionRequest<DynamicObject> = match body.try_into() {
        Ok(r) => r,
        Err(e) => {
            return Json(AdmissionResponse::invalid(format!("{e}")).into_review());
        }
    };
    let resp = review(&req, *default_tz);
    if !resp.allowed {
        tracing::info!(name = %req.name, namespace = ?req.namespace, reason = %resp.result.message, "denied");
    }
    Json(resp.into_review())
}

/// Loads the PEM certificate chain and key from `dir/tls.crt` and `dir/tls.key`.
pub fn tls_config(dir: &Path) -> Result<rustls::ServerConfig> {
    let crt = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let certs = CertificateDer::pem_file_iter(&crt)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Webhook(format!("{}: {e}", crt.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| Error::Webhook(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Webhook(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Webhook(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `address` until `stop`; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    config: rustls::ServerConfig,
    router: Router,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| Error::Webhook(format!("bind {address}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Webhook(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "webhook accept failed");
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::debug!(%error, %peer, "webhook TLS handshake failed");
                        return;
                    }
                };
                if let Err(error) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%error, %peer, "webhook connection error");
                }
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
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
