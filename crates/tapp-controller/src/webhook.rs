//! The validating admission webhook (admission.k8s.io/v1) and its TLS.
//!
//! TLS without committed keys: every replica loads (or, the first one, generates) a CA and a
//! serving certificate kept in a Secret (`--webhook-cert-secret`), serves HTTPS with it and
//! patches the CA into the `caBundle` of the ValidatingWebhookConfiguration
//! (`--webhook-config-name`). The certificate is regenerated when it expires within 30 days;
//! replicas re-read the Secret every hour and swap certificates without a restart.
//! With `--webhook-tls-cert-file`/`--webhook-tls-key-file` an externally managed certificate
//! (cert-manager, helm) is served instead and nothing is patched.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::{Json, Router, extract::State, routing::post};
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::validate::validate_tapp;
use crate::{Error, Result};

/// Path of the webhook (the original's).
pub const PATH: &str = "/validate/tapp";
/// Secret annotation holding the certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "apps.tkestack.io/not-after";
/// Lifetime of generated certificates.
pub const CERT_LIFETIME_DAYS: i64 = 365;
/// Regenerate when the certificate expires within this many days.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Answers one AdmissionReview.
pub fn review(
    review: AdmissionReview<DynamicObject>,
    metrics: Option<&Metrics>,
) -> AdmissionReview<DynamicObject> {
    let count = |result: &str| {
        if let Some(m) = metrics {
            m.webhook.with_label_values(&[result]).inc();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            count("error");
            return AdmissionResponse::invalid(e.to_string()).into_review();
        }
    };
    let response = AdmissionResponse::from(&request);
    let Some(object) = request.object.as_ref() else {
        count("allowed");
        return response.into_review();
    };
    let value = serde_json::to_value(object).unwrap_or_default();
    let errors = validate_tapp(&value);
    if errors.is_empty() {
        count("allowed");
        response.into_review()
    } else {
        count("denied");
        let name = object.metadata.name.as_deref().unwrap_or("");
        response
            .deny(format!(
                "TApp.apps.tkestack.io {name:?} is invalid: {}",
                errors.join("; ")
            ))
            .into_review()
    }
}

/// The webhook router: `POST /validate/tapp`.
pub fn router(metrics: Option<Metrics>) -> Router {
    Router::new()
        .route(
            PATH,
            post(
                |State(m): State<Option<Metrics>>,
                 Json(body): Json<AdmissionReview<DynamicObject>>| async move {
                    Json(review(body, m.as_ref()))
                },
            ),
        )
        .with_state(metrics)
}

/// PEM material of the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// CA certificate (the caBundle).
    pub ca_pem: String,
    /// Serving certificate chain.
    pub cert_pem: String,
    /// Serving key.
    pub key_pem: String,
    /// Expiry of the serving certificate.
    pub not_after: DateTime<Utc>,
}

/// Generates a CA and a serving certificate for `service`.`namespace`.svc.
pub fn generate(service: &str, namespace: &str, now: DateTime<Utc>) -> Result<CertBundle> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());
    let not_after = now + chrono::Duration::days(CERT_LIFETIME_DAYS);
    let to_offset = |t: DateTime<Utc>| {
        rcgen::date_time_ymd(
            t.format("%Y").to_string().parse().unwrap_or(2026),
            t.format("%m").to_string().parse().unwrap_or(1),
            t.format("%d").to_string().parse().unwrap_or(1),
        )
    };
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{service}-ca"));
    ca_params.not_before = to_offset(now - chrono::Duration::days(1));
    ca_params.not_after = to_offset(not_after + chrono::Duration::days(1));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let names = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{service}.{namespace}.svc"),
    );
    params.not_before = to_offset(now - chrono::Duration::days(1));
    params.not_after = to_offset(not_after);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    Ok(CertBundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

fn bundle_from_secret(secret: &Secret) -> Option<CertBundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let not_after = secret
        .metadata
        .annotations
        .as_ref()?
        .get(NOT_AFTER_ANNOTATION)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    Some(CertBundle {
        ca_pem: text("ca.crt")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        not_after,
    })
}

fn secret_of(name: &str, bundle: &CertBundle, resource_version: Option<String>) -> Secret {
    let data = BTreeMap::from([
        (
            "ca.crt".to_string(),
            ByteString(bundle.ca_pem.clone().into_bytes()),
        ),
        (
            "tls.crt".to_string(),
            ByteString(bundle.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(bundle.key_pem.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_string(),
                bundle.not_after.to_rfc3339(),
            )])),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Where the webhook's certificate comes from.
#[derive(Clone)]
pub struct SecretCerts {
    /// API client.
    pub client: Client,
    /// Namespace of the Secret and the Service.
    pub namespace: String,
    /// Secret name.
    pub secret: String,
    /// Service name (certificate DNS names).
    pub service: String,
    /// ValidatingWebhookConfiguration to patch (`None`: don't patch).
    pub webhook_config: Option<String>,
}

impl SecretCerts {
    /// Loads the certificate from the Secret, creating or renewing it when needed (every replica
    /// converges on the same Secret: creation races end in AlreadyExists, updates in Conflict,
    /// and the loser re-reads).
    pub async fn ensure(&self, now: DateTime<Utc>) -> Result<CertBundle> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for _ in 0..3 {
            let existing = api.get_opt(&self.secret).await?;
            if let Some(bundle) = existing.as_ref().and_then(bundle_from_secret)
                && bundle.not_after - now > chrono::Duration::days(RENEW_BEFORE_DAYS)
            {
                return Ok(bundle);
            }
            let bundle = generate(&self.service, &self.namespace, now)?;
            let result = match existing {
                None => {
                    api.create(
                        &PostParams::default(),
                        &secret_of(&self.secret, &bundle, None),
                    )
                    .await
                }
                Some(s) => {
                    api.replace(
                        &self.secret,
                        &PostParams::default(),
                        &secret_of(&self.secret, &bundle, s.metadata.resource_version.clone()),
                    )
                    .await
                }
            };
            match result {
                Ok(_) => return Ok(bundle),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Tls(format!(
            "secret {}/{} keeps changing",
            self.namespace, self.secret
        )))
    }

    /// Writes the CA into every webhook of the configuration that points at our Service.
    pub async fn patch_ca_bundle(&self, ca_pem: &str) -> Result<()> {
        let Some(name) = self.webhook_config.as_deref() else {
            return Ok(());
        };
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = api.get(name).await?;
        let mut ops = Vec::new();
        for (i, w) in config.webhooks.iter().flatten().enumerate() {
            let ours = w
                .client_config
                .service
                .as_ref()
                .is_some_and(|s| s.name == self.service && s.namespace == self.namespace);
            let current = w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice());
            if ours && current != Some(ca_pem.as_bytes()) {
                ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
                ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                    "value": base64_encode(ca_pem.as_bytes())}));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))?;
        api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await?;
        tracing::info!(config = name, "patched webhook caBundle");
        Ok(())
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Builds a rustls server configuration from PEM.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: String| Error::Tls(e);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls(format!("certificate: {e:?}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| tls(format!("key: {e:?}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A TLS configuration that can be swapped while serving (certificate rotation).
pub type SharedTls = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Serves `router` over HTTPS on `addr` until `stop`; returns the bound address.
pub async fn serve_tls(
    addr: SocketAddr,
    router: Router,
    tls: SharedTls,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("binding the webhook on {addr}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        what: "webhook address".into(),
        source,
    })?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "webhook accept failed");
                        continue;
                    }
                },
            };
            let config = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
            let router = router.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "webhook TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let service = hyper_util::service::TowerToHyperService::new(router);
                if let Err(error) = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
                {
                    tracing::debug!(%error, %peer, "webhook connection ended");
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

    fn review_of(spec: serde_json::Value) -> AdmissionReview<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "r1", "kind": {"group": "apps.tkestack.io", "version": "v1", "kind": "TApp"},
                "resource": {"group": "apps.tkestack.io", "version": "v1", "resource": "tapps"},
                "name": "t", "namespace": "default", "operation": "CREATE",
                "userInfo": {"username": "u"},
                "object": {"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "metadata": {"name": "t"}, "spec": spec}}
        }))
        .expect("review")
    }

    #[test]
    fn reviews_allow_valid_and_deny_invalid_with_field_names() {
        let ok = review(
            review_of(json!({"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}}})),
            None,
        );
        let v = serde_json::to_value(&ok).expect("json");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["uid"], "r1");
        let bad = review(
            review_of(
                json!({"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}}, "updateStrategy": {"maxUnavailable": "0%"}}),
            ),
            None,
        );
        let v = serde_json::to_value(&bad).expect("json");
        assert_eq!(v["response"]["allowed"], false);
        let msg = v["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(msg.contains("spec.updateStrategy.maxUnavailable"), "{msg}");
    }

    #[test]
    fn generated_certificates_load_into_rustls() {
        let now = Utc::now();
        let b = generate("tapp-controller", "kube-system", now).expect("generate");
        assert!(b.ca_pem.contains("BEGIN CERTIFICATE"));
        server_config(&b.cert_pem, &b.key_pem).expect("rustls accepts it");
        let s = secret_of("x", &b, None);
        assert_eq!(
            bundle_from_secret(&s),
            Some(CertBundle {
                not_after: DateTime::parse_from_rfc3339(&b.not_after.to_rfc3339())
                    .expect("t")
                    .with_timezone(&Utc),
                ..b
            })
        );
    }
}
