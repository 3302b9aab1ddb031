//! A minimal HTTP/1.1 client (one connection per request) for scheduler extenders and admission
//! webhooks: plain HTTP or HTTPS verified against a given CA bundle.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Errors of [`post_json`].
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Bad URL.
    #[error("invalid URL {0:?}")]
    Url(String),
    /// Bad CA bundle / TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Connection or protocol failure.
    #[error("{0}")]
    Io(String),
    /// Timed out.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

/// A rustls client configuration trusting exactly the PEM certificates in `ca_pem`.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| HttpError::Tls(format!("caBundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HttpError::Tls(format!("caBundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(HttpError::Tls("caBundle holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// POSTs a JSON body, returning status and body. `https://` URLs need `tls`.
pub async fn post_json(
    url: &str,
    body: Vec<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    post_json_via(url, None, body, tls, timeout).await
}

/// Like [`post_json`], but connects to `connect` (`host:port`) instead of the URL's host,
/// still verifying the certificate against the URL's host (how a service reference is called).
pub async fn post_json_via(
    url: &str,
    connect: Option<(String, u16)>,
    body: Vec<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    match tokio::time::timeout(timeout, post_inner(url, connect, body, tls)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

async fn post_inner(
    url: &str,
    connect: Option<(String, u16)>,
    body: Vec<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(u16, Bytes), HttpError> {
    let uri: Uri = url.parse().map_err(|_| HttpError::Url(url.into()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(HttpError::Url(url.into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| HttpError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let (dial_host, dial_port) = connect.unwrap_or_else(|| (host.clone(), port));
    let tcp = TcpStream::connect((dial_host.as_str(), dial_port))
        .await
        .map_err(|e| HttpError::Io(format!("dial {dial_host}:{dial_port}: {e}")))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Io(e.to_string()))?;
    if https {
        let cfg = tls.ok_or_else(|| HttpError::Tls("https URL without a CA bundle".into()))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| HttpError::Tls(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Tls(format!("handshake with {host}:{port}: {e}")))?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<T>(io: T, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
