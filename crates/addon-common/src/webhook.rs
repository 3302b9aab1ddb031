//! Admission-webhook plumbing shared by the controllers: `admission.k8s.io/v1`
//! AdmissionReview handling, HTTPS serving with a swappable rustls configuration, and two
//! ways to get the serving certificate.
//!
//! - **Admission**: [`admission_handler`] (or [`admission_handler_observed`], which also
//!   reports each [`Outcome`] for metrics) turns a pure
//!   `Fn(&AdmissionRequest<DynamicObject>) -> AdmissionResponse` into an axum `POST` handler;
//!   [`answer`] is the same without HTTP. The validation itself stays in each controller.
//! - **Serving**: [`serve_https`] serves an axum `Router` over TLS until a
//!   `CancellationToken` fires; every new connection uses the configuration currently held by
//!   its [`ReloadableTls`], so certificates rotate without a restart.
//! - **Certificates from files**: [`server_config`] (PEM strings), [`server_config_from_dir`]
//!   (`tls.crt`/`tls.key` of a mounted Secret), [`cert_dir_tls`], which also re-reads the
//!   directory and swaps the certificate when the kubelet updates the mounted Secret, and
//!   [`cert_files_tls`], the same for two named files.
//! - **Self-managed certificates**: [`SecretCerts`] generates a CA and a serving certificate
//!   for `<service>.<namespace>.svc` ([`generate`]), keeps them in a Secret every replica
//!   shares (create/replace with optimistic concurrency), patches the CA into the `caBundle`
//!   of a Validating- or MutatingWebhookConfiguration, renews the certificate
//!   [`RENEW_BEFORE_DAYS`] before it expires and re-reads the Secret every
//!   [`REFRESH_INTERVAL`] ([`SecretCerts::start`]).
//! - **A component's webhook**: [`serve_webhook`] starts it from the shared
//!   [`WebhookArgs`] flags (off when `--webhook-address` is empty; the certificate from
//!   [`CertSource::of`]: a mounted directory, two files, or self-managed), and
//!   [`ReviewMetrics`] counts its answers as `<component>_webhook_requests_total{result}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::{Json, Router, routing::MethodRouter};
use chrono::{DateTime, Datelike, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::{Api, Client};
use rustls::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::WebhookArgs;
use crate::runtime::{Process, own_namespace};
use crate::{Error, Result};

/// Lifetime of generated certificates (CA and serving certificate).
pub const CERT_LIFETIME_DAYS: i64 = 365;
/// A stored certificate is regenerated when it expires within this many days.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// How often [`SecretCerts::start`] re-reads (and, when due, renews) the Secret.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// How often [`cert_dir_tls`] looks for a rotated certificate in its directory by default
/// (the kubelet refreshes mounted Secrets about once a minute).
pub const CERT_DIR_POLL: Duration = Duration::from_secs(30);
/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Admission

/// What became of one AdmissionReview (the `result` label of webhook metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request was allowed.
    Allowed,
    /// The request was denied.
    Denied,
    /// The review was malformed (no request): answered as invalid.
    Error,
}

impl Outcome {
    /// `allowed`, `denied` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// Answers one AdmissionReview with `decide` (a review without a request is answered as
/// invalid without calling it); denials are logged at info level.
pub fn answer<F>(
    review: AdmissionReview<DynamicObject>,
    decide: F,
) -> (AdmissionReview<DynamicObject>, Outcome)
where
    F: FnOnce(&AdmissionRequest<DynamicObject>) -> AdmissionResponse,
{
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return (
                AdmissionResponse::invalid(e.to_string()).into_review(),
                Outcome::Error,
            );
        }
    };
    let response = decide(&request);
    let outcome = if response.allowed {
        Outcome::Allowed
    } else {
        tracing::info!(
            name = %request.name,
            namespace = ?request.namespace,
            reason = %response.result.message,
            "admission denied"
        );
        Outcome::Denied
    };
    (response.into_review(), outcome)
}

/// An axum `POST` handler answering `admission.k8s.io/v1` AdmissionReviews with `decide`.
pub fn admission_handler<F>(decide: F) -> MethodRouter
where
    F: Fn(&AdmissionRequest<DynamicObject>) -> AdmissionResponse + Clone + Send + Sync + 'static,
{
    admission_handler_observed(decide, |_| {})
}

/// [`admission_handler`] that also reports every review's [`Outcome`] to `observe`
/// (typically a counter labelled with [`Outcome::as_str`]).
pub fn admission_handler_observed<F, O>(decide: F, observe: O) -> MethodRouter
where
    F: Fn(&AdmissionRequest<DynamicObject>) -> AdmissionResponse + Clone + Send + Sync + 'static,
    O: Fn(Outcome) + Clone + Send + Sync + 'static,
{
    axum::routing::post(
        move |Json(review): Json<AdmissionReview<DynamicObject>>| async move {
            let (review, outcome) = answer(review, &decide);
            observe(outcome);
            Json(review)
        },
    )
}

// ---------------------------------------------------------------------------------------
// TLS configuration

fn tls_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

fn build_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_what: &str,
    key_what: &str,
) -> Result<Arc<ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(cert_what, e))?;
    if certs.is_empty() {
        return Err(tls_error(cert_what, "no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls_error(key_what, e))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls_error(cert_what, e))?;
    // The server speaks both (hyper-util's auto builder).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls server configuration (ring provider, HTTP/2 and HTTP/1.1 by ALPN) from a PEM
/// certificate chain and a PEM private key.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>> {
    build_config(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        "certificate",
        "key",
    )
}

/// File names of a certificate directory (a mounted `kubernetes.io/tls` Secret).
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| tls_error(path.display(), e));
    Ok((read(cert)?, read(key)?))
}

fn config_from_pair(
    (cert_path, key_path): (&Path, &Path),
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<ServerConfig>> {
    build_config(
        cert,
        key,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    )
}

/// [`server_config`] from `dir/tls.crt` and `dir/tls.key`; errors name the file.
pub fn server_config_from_dir(dir: &Path) -> Result<Arc<ServerConfig>> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let (cert_pem, key_pem) = read_pair(&cert, &key)?;
    config_from_pair((&cert, &key), &cert_pem, &key_pem)
}

/// A rustls configuration that can be swapped while serving; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloadableTls {
    inner: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadableTls {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(config)),
        }
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the configuration; open connections keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// Loads `dir/tls.crt` and `dir/tls.key` (see [`server_config_from_dir`]) and, until `stop`,
/// re-reads them every `poll`, swapping the certificate when they change and load
/// ([`cert_files_tls`]).
pub async fn cert_dir_tls(
    dir: impl Into<PathBuf>,
    poll: Duration,
    stop: CancellationToken,
) -> Result<ReloadableTls> {
    let dir = dir.into();
    cert_files_tls(dir.join(CERT_FILE), dir.join(KEY_FILE), poll, stop).await
}

/// Loads the PEM certificate chain `cert` and key `key` and, until `stop`, re-reads them
/// every `poll`, swapping the certificate when they change and load. A pair that does not
/// load (a rotation caught half-way) is logged and retried at the next change; the previous
/// certificate stays in use meanwhile.
pub async fn cert_files_tls(
    cert: PathBuf,
    key: PathBuf,
    poll: Duration,
    stop: CancellationToken,
) -> Result<ReloadableTls> {
    let pem = read_pair(&cert, &key)?;
    let tls = ReloadableTls::new(config_from_pair((&cert, &key), &pem.0, &pem.1)?);
    let reloaded = tls.clone();
    tokio::spawn(
        async move {
            let mut seen = pem;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(poll) => {}
                }
                let files = tokio::task::spawn_blocking({
                    let (cert, key) = (cert.clone(), key.clone());
                    move || read_pair(&cert, &key)
                })
                .await;
                let files = match files {
                    Ok(Ok(f)) => f,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "webhook certificate unreadable; retrying");
                        continue;
                    }
                    Err(_) => continue,
                };
                if files == seen {
                    continue;
                }
                match config_from_pair((&cert, &key), &files.0, &files.1) {
                    Ok(config) => {
                        reloaded.replace(config);
                        tracing::info!(cert = %cert.display(), "webhook certificate reloaded");
                    }
                    Err(error) => tracing::warn!(%error, "rotated webhook certificate unusable"),
                }
                seen = files;
            }
        }
        .instrument(tracing::info_span!("webhook_cert_reload")),
    );
    Ok(tls)
}

// ---------------------------------------------------------------------------------------
// Serving

/// Serves `router` over HTTPS (HTTP/1.1 and HTTP/2) on `addr` until `stop`; each connection
/// uses `tls`'s configuration of the moment it is accepted. Returns the bound address and
/// the accept loop, which ends when `stop` fires.
pub async fn serve_https(
    addr: SocketAddr,
    router: Router,
    tls: ReloadableTls,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let io = |what: &'static str| {
        move |source| Error::Io {
            what,
            address: addr.to_string(),
            source,
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io("binding the webhook"))?;
    let local = listener.local_addr().map_err(io("webhook address"))?;
    let task = tokio::spawn(
        async move {
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
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let router = router.clone();
                tokio::spawn(
                    async move {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, %peer, "webhook TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                                    return;
                                }
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
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(tracing::info_span!("webhook", address = %local)),
    );
    Ok((local, task))
}

// ---------------------------------------------------------------------------------------
// Self-managed certificates

/// PEM material of a self-managed webhook certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// CA certificate (what goes into `caBundle`).
    pub ca_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving key.
    pub key_pem: String,
    /// Expiry of the serving certificate.
    pub not_after: DateTime<Utc>,
}

/// Generates a CA (`<service>-ca`) and a serving certificate for `<service>`,
/// `<service>.<namespace>`, `<service>.<namespace>.svc` and
/// `<service>.<namespace>.svc.cluster.local`, valid [`CERT_LIFETIME_DAYS`] from `now`.
pub fn generate(service: &str, namespace: &str, now: DateTime<Utc>) -> Result<CertBundle> {
    let tls = |e: rcgen::Error| tls_error("generating the webhook certificate", e);
    let not_after = now + chrono::Duration::days(CERT_LIFETIME_DAYS);
    // Month and day always fit in a u8.
    let rcgen_date =
        |t: DateTime<Utc>| rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8);
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{service}-ca"));
    ca_params.not_before = rcgen_date(now - chrono::Duration::days(1));
    ca_params.not_after = rcgen_date(not_after + chrono::Duration::days(1));
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
    params.not_before = rcgen_date(now - chrono::Duration::days(1));
    params.not_after = rcgen_date(not_after);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    Ok(CertBundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Reads a bundle from a Secret written by [`secret_of`] (`ca.crt`, `tls.crt`, `tls.key`
/// and the expiry in the `not_after_annotation`); `None` when anything is missing.
pub fn bundle_from_secret(secret: &Secret, not_after_annotation: &str) -> Option<CertBundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let not_after = secret
        .metadata
        .annotations
        .as_ref()?
        .get(not_after_annotation)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    Some(CertBundle {
        ca_pem: text("ca.crt")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        not_after,
    })
}

/// The `kubernetes.io/tls` Secret `name` holding `bundle` (its expiry in
/// `not_after_annotation`).
pub fn secret_of(
    name: &str,
    bundle: &CertBundle,
    not_after_annotation: &str,
    resource_version: Option<String>,
) -> Secret {
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
                not_after_annotation.to_string(),
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

/// The webhook configuration whose `caBundle` [`SecretCerts`] keeps up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookConfig {
    /// A ValidatingWebhookConfiguration, by name.
    Validating(String),
    /// A MutatingWebhookConfiguration, by name.
    Mutating(String),
}

impl WebhookConfig {
    /// The configuration's name.
    pub fn name(&self) -> &str {
        match self {
            WebhookConfig::Validating(n) | WebhookConfig::Mutating(n) => n,
        }
    }
}

/// JSON-patch operations writing `ca_pem` into the `caBundle` of every webhook (given as
/// `(name, clientConfig)` in order) that calls `service`.`namespace` and does not already
/// carry it; each write is guarded by a `test` of the webhook's name. Empty: nothing to do.
pub fn ca_bundle_ops<'a>(
    webhooks: impl IntoIterator<Item = (&'a str, &'a WebhookClientConfig)>,
    service: &str,
    namespace: &str,
    ca_pem: &str,
) -> Vec<serde_json::Value> {
    use base64::Engine;
    let mut ops = Vec::new();
    for (i, (name, client_config)) in webhooks.into_iter().enumerate() {
        let ours = client_config
            .service
            .as_ref()
            .is_some_and(|s| s.name == service && s.namespace == namespace);
        let current = client_config.ca_bundle.as_ref().map(|b| b.0.as_slice());
        if ours && current != Some(ca_pem.as_bytes()) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())}));
        }
    }
    ops
}

/// A self-managed webhook certificate kept in a Secret that every replica shares.
#[derive(Clone)]
pub struct SecretCerts {
    /// API client.
    pub client: Client,
    /// Namespace of the Secret and of the webhook Service.
    pub namespace: String,
    /// Secret name.
    pub secret: String,
    /// Service name (the certificate's DNS names; the webhooks whose `caBundle` is patched).
    pub service: String,
    /// Secret annotation holding the certificate's expiry (RFC 3339), e.g.
    /// `apps.tkestack.io/not-after`.
    pub not_after_annotation: String,
    /// Webhook configuration to patch (`None`: don't patch).
    pub webhook_config: Option<WebhookConfig>,
}

impl SecretCerts {
    /// Loads the certificate from the Secret, creating it or renewing it when it expires
    /// within [`RENEW_BEFORE_DAYS`]. Every replica converges on the same Secret: a creation
    /// race ends in AlreadyExists, an update race in Conflict, and the loser re-reads.
    pub async fn ensure(&self, now: DateTime<Utc>) -> Result<CertBundle> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let annotation = self.not_after_annotation.as_str();
        for _ in 0..3 {
            let existing = api.get_opt(&self.secret).await.map_err(Error::Kube)?;
            if let Some(bundle) = existing
                .as_ref()
                .and_then(|s| bundle_from_secret(s, annotation))
                && bundle.not_after - now > chrono::Duration::days(RENEW_BEFORE_DAYS)
            {
                return Ok(bundle);
            }
            let bundle = generate(&self.service, &self.namespace, now)?;
            let result = match existing {
                None => {
                    api.create(
                        &PostParams::default(),
                        &secret_of(&self.secret, &bundle, annotation, None),
                    )
                    .await
                }
                Some(s) => {
                    let rv = s.metadata.resource_version.clone();
                    api.replace(
                        &self.secret,
                        &PostParams::default(),
                        &secret_of(&self.secret, &bundle, annotation, rv),
                    )
                    .await
                }
            };
            match result {
                Ok(_) => return Ok(bundle),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(Error::Kube(e)),
            }
        }
        Err(Error::Tls(format!(
            "secret {}/{} keeps changing",
            self.namespace, self.secret
        )))
    }

    /// Writes `ca_pem` into the `caBundle` of every webhook of [`Self::webhook_config`] that
    /// calls our Service (a JSON patch, only when something differs).
    pub async fn patch_ca_bundle(&self, ca_pem: &str) -> Result<()> {
        let (service, namespace) = (self.service.as_str(), self.namespace.as_str());
        match &self.webhook_config {
            None => Ok(()),
            Some(WebhookConfig::Validating(name)) => {
                let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
                let config = api.get(name).await.map_err(Error::Kube)?;
                let hooks = config.webhooks.iter().flatten();
                let ops = ca_bundle_ops(
                    hooks.map(|w| (w.name.as_str(), &w.client_config)),
                    service,
                    namespace,
                    ca_pem,
                );
                apply_ops(&api, name, ops).await
            }
            Some(WebhookConfig::Mutating(name)) => {
                let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
                let config = api.get(name).await.map_err(Error::Kube)?;
                let hooks = config.webhooks.iter().flatten();
                let ops = ca_bundle_ops(
                    hooks.map(|w| (w.name.as_str(), &w.client_config)),
                    service,
                    namespace,
                    ca_pem,
                );
                apply_ops(&api, name, ops).await
            }
        }
    }

    /// Everything a replica does with a self-managed certificate: [`Self::ensure`], patch
    /// the `caBundle` (a failure is logged and retried at the next refresh), and until
    /// `stop`, every [`REFRESH_INTERVAL`], re-read (renewing when due) the Secret, swap a
    /// changed certificate into the returned configuration and re-patch the `caBundle`.
    pub async fn start(&self, stop: CancellationToken) -> Result<ReloadableTls> {
        let bundle = self.ensure(Utc::now()).await?;
        let tls = ReloadableTls::new(server_config(&bundle.cert_pem, &bundle.key_pem)?);
        if let Err(error) = self.patch_ca_bundle(&bundle.ca_pem).await {
            tracing::warn!(%error, "cannot patch the webhook caBundle yet; retrying hourly");
        }
        let certs = self.clone();
        let swapped = tls.clone();
        tokio::spawn(async move {
            let mut current = bundle;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
                match certs.ensure(Utc::now()).await {
                    Ok(b) => {
                        if b != current {
                            match server_config(&b.cert_pem, &b.key_pem) {
                                Ok(config) => {
                                    swapped.replace(config);
                                    tracing::info!(secret = %certs.secret, "webhook certificate renewed");
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "new webhook certificate unusable");
                                }
                            }
                            current = b;
                        }
                        if let Err(error) = certs.patch_ca_bundle(&current.ca_pem).await {
                            tracing::warn!(%error, "cannot patch the webhook caBundle");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot renew the webhook certificate"),
                }
            }
        }.instrument(tracing::info_span!("webhook_cert_refresh", secret = %self.secret)));
        Ok(tls)
    }
}

async fn apply_ops<K>(api: &Api<K>, name: &str, ops: Vec<serde_json::Value>) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(Error::Kube)?;
    tracing::info!(config = name, "patched webhook caBundle");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A component's webhook, from its flags

/// `<prefix>_webhook_requests_total{result}`: admission reviews answered by a component's
/// webhook, by [`Outcome`]. Every add-on with a webhook registers it in its `Metrics` and
/// reports each review to it ([`admission_handler_observed`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReviewMetrics {
    requests: prometheus::IntCounterVec,
}

impl ReviewMetrics {
    /// Registers the counter of `component` (e.g. `tapp-controller`) in `registry`.
    pub fn register(registry: &prometheus::Registry, component: &str) -> Result<Self> {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                format!(
                    "{}_webhook_requests_total",
                    crate::metrics::metric_prefix(component)
                ),
                "Admission reviews answered, by result (allowed, denied, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self { requests })
    }

    /// Counts one answered review.
    pub fn observe(&self, outcome: Outcome) {
        self.requests.with_label_values(&[outcome.as_str()]).inc();
    }

    /// Reviews counted with `outcome` so far.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.requests.with_label_values(&[outcome.as_str()]).get()
    }
}

/// Where a webhook's serving certificate comes from (see [`WebhookArgs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` of a mounted directory, re-read on change.
    Dir(PathBuf),
    /// Two PEM files, re-read on change.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated and kept in a Secret by the controller ([`SecretCerts`]).
    SelfManaged {
        /// Namespace of the Secret and the Service.
        namespace: String,
        /// Secret name.
        secret: String,
        /// Service name.
        service: String,
        /// Webhook configuration whose `caBundle` is patched (`None`: none).
        config_name: Option<String>,
    },
}

impl CertSource {
    /// The source `args` choose for `component`: the directory, else the two files, else a
    /// self-managed certificate whose unset names default to the component's (Service and
    /// configuration `<component>`, Secret `<component>-webhook-cert`, namespace
    /// [`own_namespace`]).
    pub fn of(args: &WebhookArgs, component: &str) -> Self {
        if let Some(dir) = &args.cert_dir {
            return Self::Dir(dir.clone());
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
            return Self::Files {
                cert: cert.clone(),
                key: key.clone(),
            };
        }
        Self::SelfManaged {
            namespace: own_namespace(args.namespace.as_deref()),
            secret: args
                .cert_secret
                .clone()
                .unwrap_or_else(|| format!("{component}-webhook-cert")),
            service: args.service.clone().unwrap_or_else(|| component.to_owned()),
            config_name: match &args.config_name {
                Some(name) if name.is_empty() => None,
                Some(name) => Some(name.clone()),
                None => Some(component.to_owned()),
            },
        }
    }
}

impl std::fmt::Display for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "directory {}", dir.display()),
            Self::Files { cert, .. } => write!(f, "file {}", cert.display()),
            Self::SelfManaged {
                namespace, secret, ..
            } => write!(f, "self-managed in secret {namespace}/{secret}"),
        }
    }
}

/// What kind of webhook a component serves, for [`serve_webhook`].
#[derive(Clone, Copy, Debug)]
pub struct WebhookKind {
    /// The configuration a self-managed CA is patched into: `WebhookConfig::Validating` or
    /// `WebhookConfig::Mutating`.
    pub config: fn(String) -> WebhookConfig,
    /// Secret annotation holding a self-managed certificate's expiry (RFC 3339), e.g.
    /// `apps.tkestack.io/not-after`.
    pub not_after_annotation: &'static str,
}

/// Starts the admission webhook `args` describe: loads (or creates) the certificate of its
/// [`CertSource`], keeps it current, and serves `router` over HTTPS on every replica until
/// the process shuts down. Returns the bound address, or `None` when `--webhook-address` is
/// empty (the webhook is off).
pub async fn serve_webhook(
    args: &WebhookArgs,
    process: &Process,
    router: Router,
    kind: WebhookKind,
) -> Result<Option<SocketAddr>> {
    let Some(address) = args.address else {
        tracing::info!("--webhook-address is empty: admission webhook off");
        return Ok(None);
    };
    let stop = process.shutdown.clone();
    let source = CertSource::of(args, process.component);
    let tls = match &source {
        CertSource::Dir(dir) => cert_dir_tls(dir, CERT_DIR_POLL, stop.clone()).await?,
        CertSource::Files { cert, key } => {
            cert_files_tls(cert.clone(), key.clone(), CERT_DIR_POLL, stop.clone()).await?
        }
        CertSource::SelfManaged {
            namespace,
            secret,
            service,
            config_name,
        } => {
            let certs = SecretCerts {
                client: process.client.clone(),
                namespace: namespace.clone(),
                secret: secret.clone(),
                service: service.clone(),
                not_after_annotation: kind.not_after_annotation.into(),
                webhook_config: config_name.clone().map(kind.config),
            };
            certs.start(stop.clone()).await?
        }
    };
    let (local, _accept) = serve_https(address, router, tls, stop).await?;
    tracing::info!(%local, certificate = %source, "admission webhook serving");
    Ok(Some(local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ServiceReference;
    use serde_json::json;
    use tower::ServiceExt;

    fn review_json(with_request: bool) -> AdmissionReview<DynamicObject> {
        let mut v = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        if with_request {
            v["request"] = json!({
                "uid": "u1", "kind": {"group": "g", "version": "v1", "kind": "K"},
                "resource": {"group": "g", "version": "v1", "resource": "ks"},
                "name": "n", "namespace": "default", "operation": "CREATE",
                "userInfo": {}, "object": {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n"}}
            });
        }
        serde_json::from_value(v).expect("review")
    }

    fn allow_all(r: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(r)
    }

    fn deny_all(r: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(r).deny("spec.x: nope")
    }

    #[test]
    fn answers_carry_the_uid_and_the_outcome() {
        let (ok, outcome) = answer(review_json(true), allow_all);
        assert_eq!(outcome, Outcome::Allowed);
        let v = serde_json::to_value(&ok).expect("json");
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], true);

        let (bad, outcome) = answer(review_json(true), deny_all);
        assert_eq!(outcome, Outcome::Denied);
        let v = serde_json::to_value(&bad).expect("json");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["message"], "spec.x: nope");

        let (invalid, outcome) = answer(review_json(false), |_| panic!("not called"));
        assert_eq!(outcome, Outcome::Error);
        let v = serde_json::to_value(&invalid).expect("json");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(
            [Outcome::Allowed, Outcome::Denied, Outcome::Error].map(Outcome::as_str),
            ["allowed", "denied", "error"]
        );
    }

    #[tokio::test]
    async fn the_handler_speaks_admission_review_json_and_reports_outcomes() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let router = Router::new().route(
            "/validate",
            admission_handler_observed(deny_all, move |o| {
                record.lock().expect("lock").push(o);
            }),
        );
        let body = serde_json::to_vec(&review_json(true)).expect("body");
        let response = router
            .oneshot(
                http::Request::post("/validate")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("bytes");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(*seen.lock().expect("lock"), vec![Outcome::Denied]);
    }

    #[tokio::test]
    async fn review_metrics_count_what_the_handler_answers() {
        let registry = prometheus::Registry::new();
        let reviews = ReviewMetrics::register(&registry, "demo-controller").expect("register");
        let counted = reviews.clone();
        let router = Router::new().route(
            "/validate",
            admission_handler_observed(deny_all, move |o| counted.observe(o)),
        );
        for _ in 0..2 {
            let body = serde_json::to_vec(&review_json(true)).expect("body");
            let request = http::Request::post("/validate")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("response");
            assert_eq!(response.status(), 200);
        }
        assert_eq!(reviews.count(Outcome::Denied), 2);
        assert_eq!(reviews.count(Outcome::Allowed), 0);
        let text = crate::metrics::encode_text(&registry);
        assert!(
            text.contains(r#"demo_controller_webhook_requests_total{result="denied"} 2"#),
            "{text}"
        );
        assert!(ReviewMetrics::register(&registry, "demo-controller").is_err());
    }

    #[test]
    fn cert_sources_follow_the_flags_and_default_to_the_component() {
        let args = |f: &dyn Fn(&mut WebhookArgs)| {
            let mut a = WebhookArgs {
                namespace: Some("ops".into()),
                ..WebhookArgs::default()
            };
            f(&mut a);
            CertSource::of(&a, "demo")
        };
        assert_eq!(
            args(&|_| {}),
            CertSource::SelfManaged {
                namespace: "ops".into(),
                secret: "demo-webhook-cert".into(),
                service: "demo".into(),
                config_name: Some("demo".into()),
            }
        );
        let named = args(&|a| {
            a.service = Some("svc".into());
            a.cert_secret = Some("sec".into());
            a.config_name = Some(String::new());
        });
        assert_eq!(
            named,
            CertSource::SelfManaged {
                namespace: "ops".into(),
                secret: "sec".into(),
                service: "svc".into(),
                config_name: None,
            }
        );
        let files = args(&|a| {
            a.tls_cert_file = Some("/c".into());
            a.tls_key_file = Some("/k".into());
        });
        assert_eq!(
            files,
            CertSource::Files {
                cert: "/c".into(),
                key: "/k".into()
            }
        );
        assert_eq!(
            args(&|a| a.cert_dir = Some("/d".into())),
            CertSource::Dir("/d".into())
        );
    }

    async fn process() -> Process {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let common = crate::cli::CommonArgs {
            admin: crate::cli::AdminArgs {
                admin_address: "127.0.0.1:0".parse().expect("addr"),
            },
            leader_election: crate::cli::LeaderElectionArgs {
                leader_elect: false,
                ..Default::default()
            },
            ..Default::default()
        };
        Process::start_with_client("demo", &common, client, CancellationToken::new())
            .await
            .expect("process")
    }

    const KIND: WebhookKind = WebhookKind {
        config: WebhookConfig::Validating,
        not_after_annotation: "example.io/not-after",
    };

    #[tokio::test]
    async fn serve_webhook_is_off_without_an_address_and_serves_a_mounted_certificate() {
        let process = process().await;
        let off = WebhookArgs {
            address: None,
            ..WebhookArgs::default()
        };
        let served = serve_webhook(&off, &process, Router::new(), KIND).await;
        assert_eq!(served.expect("off is not an error"), None);

        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = WebhookArgs {
            address: Some("127.0.0.1:0".parse().expect("addr")),
            cert_dir: Some(dir.path().to_path_buf()),
            ..WebhookArgs::default()
        };
        let err = serve_webhook(&args, &process, Router::new(), KIND)
            .await
            .expect_err("no certificate yet");
        assert!(err.to_string().contains("tls.crt"), "{err}");

        let b = generate("demo", "ops", Utc::now()).expect("generate");
        std::fs::write(dir.path().join("tls.crt"), &b.cert_pem).expect("crt");
        std::fs::write(dir.path().join("tls.key"), &b.key_pem).expect("key");
        let local = serve_webhook(&args, &process, Router::new(), KIND)
            .await
            .expect("serves")
            .expect("an address");
        tokio::net::TcpStream::connect(local)
            .await
            .expect("listening");

        args.cert_dir = None;
        args.tls_cert_file = Some(dir.path().join("tls.crt"));
        args.tls_key_file = Some(dir.path().join("tls.key"));
        let local = serve_webhook(&args, &process, Router::new(), KIND)
            .await
            .expect("serves the files")
            .expect("an address");
        tokio::net::TcpStream::connect(local)
            .await
            .expect("listening");
        process.shutdown.cancel();
    }

    #[test]
    fn generated_certificates_load_into_rustls_and_round_trip_through_a_secret() {
        let b = generate("svc", "ns", Utc::now()).expect("generate");
        assert!(b.ca_pem.contains("BEGIN CERTIFICATE"));
        let config = server_config(&b.cert_pem, &b.key_pem).expect("rustls accepts it");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let s = secret_of("x", &b, "example.io/not-after", None);
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            bundle_from_secret(&s, "example.io/not-after"),
            Some(CertBundle {
                not_after: DateTime::parse_from_rfc3339(&b.not_after.to_rfc3339())
                    .expect("t")
                    .with_timezone(&Utc),
                ..b
            })
        );
        assert_eq!(bundle_from_secret(&s, "other.io/not-after"), None);
    }

    #[test]
    fn bad_pem_is_a_tls_error() {
        let err = server_config("nope", "nope").expect_err("no certificate");
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert_eq!(err.metric_label(), "tls");
    }

    #[test]
    fn missing_certificate_files_are_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = server_config_from_dir(dir.path()).expect_err("no files");
        assert!(err.to_string().contains("tls.crt"), "{err}");
    }

    fn client_config(service: Option<(&str, &str)>, ca: Option<&str>) -> WebhookClientConfig {
        WebhookClientConfig {
            service: service.map(|(name, namespace)| ServiceReference {
                name: name.into(),
                namespace: namespace.into(),
                ..ServiceReference::default()
            }),
            ca_bundle: ca.map(|c| ByteString(c.as_bytes().to_vec())),
            ..WebhookClientConfig::default()
        }
    }

    #[test]
    fn ca_bundle_ops_touch_only_our_outdated_webhooks() {
        let hooks = [
            ("ours.a", client_config(Some(("svc", "ns")), None)),
            ("other", client_config(Some(("svc", "elsewhere")), None)),
            (
                "ours.current",
                client_config(Some(("svc", "ns")), Some("CA")),
            ),
            (
                "ours.stale",
                client_config(Some(("svc", "ns")), Some("OLD")),
            ),
            ("url", client_config(None, None)),
        ];
        let ops = ca_bundle_ops(hooks.iter().map(|(n, c)| (*n, c)), "svc", "ns", "CA");
        assert_eq!(
            ops,
            vec![
                json!({"op": "test", "path": "/webhooks/0/name", "value": "ours.a"}),
                json!({"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}),
                json!({"op": "test", "path": "/webhooks/3/name", "value": "ours.stale"}),
                json!({"op": "add", "path": "/webhooks/3/clientConfig/caBundle", "value": "Q0E="}),
            ]
        );
    }
}
