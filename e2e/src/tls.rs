//! Serving over TCP (plain HTTP or HTTPS with a generated CA) and kubeconfig generation.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::server::ApiServer;

/// A generated CA and a server certificate for 127.0.0.1/localhost signed by it.
pub struct Certs {
    /// CA certificate (PEM), for `certificate-authority-data`.
    pub ca_pem: String,
    /// Server certificate chain (DER).
    pub cert_der: Vec<u8>,
    /// Server private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

impl Certs {
    /// The serving certificate as PEM (a `tls.crt`).
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The private key as PKCS#8 PEM (a `tls.key`).
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_der)
    }
}

/// PEM-encodes DER bytes under `label` (64-column base64 lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generate a fresh CA and serving certificate.
pub fn generate_certs(extra_sans: &[String]) -> anyhow::Result<Certs> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "e2e-emulated-apiserver-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Certs {
        ca_pem: ca_cert.pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// A server listening on a TCP port. Dropping it stops accepting and closes its connections.
pub struct RunningServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://…` or `https://…`.
    pub url: String,
    /// CA (PEM) when serving HTTPS.
    pub ca_pem: Option<String>,
    /// A kubeconfig for this server.
    pub kubeconfig: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Stop serving.
    pub fn shutdown(&self) {
        self.task.abort();
    }

    /// Write the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.kubeconfig)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// A `kube::Client` connecting over the network using the kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(cfg)?)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Render a kubeconfig whose cluster and context are named `name` (the user `<name>-admin`).
pub fn kubeconfig(name: &str, url: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let mut cluster = serde_json::json!({"server": url});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let user = match token {
        Some(t) => serde_json::json!({"token": t}),
        None => serde_json::json!({"token": "e2e-no-auth"}),
    };
    let admin = format!("{name}-admin");
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": admin, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": admin, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    });
    serde_yaml::to_string(&v).unwrap_or_default()
}

/// One kubeconfig with the clusters, users and contexts of all of `kubeconfigs` (their names
/// must differ: give each server its own [`Config::name`](crate::Config)); the current context
/// is the first one's.
pub fn merge_kubeconfigs(kubeconfigs: &[&str]) -> anyhow::Result<String> {
    let mut merged = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
        "preferences": {},
    });
    let mut names = std::collections::BTreeSet::new();
    for (i, kc) in kubeconfigs.iter().enumerate() {
        let v: serde_json::Value = serde_yaml::from_str(kc).context("parsing a kubeconfig")?;
        if i == 0 {
            merged["current-context"] = v["current-context"].clone();
        }
        for list in ["clusters", "users", "contexts"] {
            for entry in v[list].as_array().into_iter().flatten() {
                let name = entry["name"].as_str().unwrap_or_default().to_string();
                anyhow::ensure!(
                    names.insert((list, name.clone())),
                    "two kubeconfigs name a {list} entry {name:?}"
                );
                if let Some(a) = merged[list].as_array_mut() {
                    a.push(entry.clone());
                }
            }
        }
    }
    Ok(serde_yaml::to_string(&merged)?)
}

impl ApiServer {
    /// Serve on `addr` (port 0 picks a free port). With `tls`, a CA and serving certificate are
    /// generated and the kubeconfig trusts the CA.
    pub async fn serve_tcp(&self, addr: SocketAddr, tls: bool) -> anyhow::Result<RunningServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let (acceptor, ca_pem) = if tls {
            let certs = generate_certs(&[addr.ip().to_string()])?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![rustls::pki_types::CertificateDer::from(
                        certs.cert_der.clone(),
                    )],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(certs.key_der.clone().into()),
                )?;
            let mut config = config;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(certs.ca_pem),
            )
        } else {
            (None, None)
        };
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let url = format!(
            "{}://{}:{}",
            if tls { "https" } else { "http" },
            host,
            addr.port()
        );
        let kubeconfig = kubeconfig(
            &self.config().name,
            &url,
            ca_pem.as_deref(),
            self.config().token.as_deref(),
        );
        *self
            .shared
            .kubeconfig
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(kubeconfig.clone());
        let router = self.router();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(router.clone());
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(RunningServer {
            addr,
            url,
            ca_pem,
            kubeconfig,
            task,
        })
    }
}
