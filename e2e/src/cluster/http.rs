//! A minimal HTTP/1.1 client for scheduler extenders and admission webhooks: plain HTTP or
//! HTTPS verified against a given CA bundle. [`post_json`] opens one connection per request;
//! [`Pool`] keeps connections alive between requests, as Go's `http.Transport` does for
//! kube-scheduler's extender client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
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
    let inner = async {
        let target = Target::parse(url, connect)?;
        let mut sender = target.connect(tls).await?;
        exchange(&mut sender, target.request(body)?).await
    };
    match tokio::time::timeout(timeout, inner).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

/// Where a request goes.
struct Target {
    https: bool,
    host: String,
    port: u16,
    path: String,
    authority: String,
    dial: (String, u16),
}

impl Target {
    fn parse(url: &str, connect: Option<(String, u16)>) -> Result<Target, HttpError> {
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
        let dial = connect.unwrap_or_else(|| (host.clone(), port));
        Ok(Target {
            https,
            host,
            port,
            path,
            authority,
            dial,
        })
    }

    /// The pool key: one set of connections per (scheme, dialled address, TLS server name).
    fn key(&self) -> (bool, String, u16, String) {
        (
            self.https,
            self.dial.0.clone(),
            self.dial.1,
            self.host.clone(),
        )
    }

    fn request(&self, body: Vec<u8>) -> Result<Request<Full<Bytes>>, HttpError> {
        Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Io(e.to_string()))
    }

    /// Opens a connection (TCP, then TLS for `https`) and runs its HTTP/1.1 handshake.
    async fn connect(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let (dial_host, dial_port) = (&self.dial.0, self.dial.1);
        let tcp = TcpStream::connect((dial_host.as_str(), dial_port))
            .await
            .map_err(|e| HttpError::Io(format!("dial {dial_host}:{dial_port}: {e}")))?;
        // Requests are small and latency-bound: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        if self.https {
            let cfg = tls.ok_or_else(|| HttpError::Tls("https URL without a CA bundle".into()))?;
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    HttpError::Tls(format!("handshake with {}:{}: {e}", self.host, self.port))
                })?;
            handshake(TokioIo::new(stream)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), HttpError> {
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    read_response(resp).await
}

async fn read_response(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<(u16, Bytes), HttpError> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

type PoolKey = (bool, String, u16, String);
/// Idle connections per destination, each with the time it went idle.
type Idle = HashMap<PoolKey, Vec<(SendRequest<Full<Bytes>>, Instant)>>;

/// Idle keep-alive connections, reused across requests to the same destination — what
/// kube-scheduler's extender client does (Go's `http.Transport` with Kubernetes' transport
/// defaults: at most [`Pool::MAX_IDLE_PER_HOST`] idle connections per host, closed after
/// [`Pool::IDLE_TIMEOUT`]). A request that finds its pooled connection closed before it was
/// written goes out on another one; a request already written is never sent twice.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl Pool {
    /// `DefaultMaxIdleConnsPerHost` of k8s.io/apimachinery's `SetTransportDefaults`.
    pub const MAX_IDLE_PER_HOST: usize = 25;
    /// Go's `DefaultTransport.IdleConnTimeout`.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

    /// Idle connections currently pooled (all destinations).
    pub fn idle_connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.lock();
        let conns = idle.get_mut(key)?;
        while let Some((sender, since)) = conns.pop() {
            if !sender.is_closed() && since.elapsed() < Self::IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let conns = idle.entry(key).or_default();
        conns.retain(|(s, since)| !s.is_closed() && since.elapsed() < Self::IDLE_TIMEOUT);
        if conns.len() < Self::MAX_IDLE_PER_HOST {
            conns.push((sender, Instant::now()));
        }
    }

    /// [`post_json`] over a pooled connection (a new one when none is idle).
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), HttpError> {
        match tokio::time::timeout(timeout, self.post_inner(url, body, tls)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn post_inner(
        &self,
        url: &str,
        body: Vec<u8>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(u16, Bytes), HttpError> {
        let target = Target::parse(url, None)?;
        let key = target.key();
        let mut req = target.request(body)?;
        while let Some(mut sender) = self.take(&key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let out = read_response(resp).await?;
                    self.put(key, sender);
                    return Ok(out);
                }
                Err(mut e) => match e.take_message() {
                    // not written: the connection was closed meanwhile; try another
                    Some(unsent) => req = unsent,
                    None => return Err(HttpError::Io(e.into_error().to_string())),
                },
            }
        }
        let mut sender = target.connect(tls).await?;
        let out = exchange(&mut sender, req).await?;
        self.put(key, sender);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// (end of the headers, Content-Length) once `buf` holds a request's headers.
    fn framing(buf: &[u8]) -> Option<(usize, usize)> {
        let text = String::from_utf8_lossy(buf);
        let i = text.find("\r\n\r\n")?;
        let len = text[..i]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        Some((i + 4, len))
    }

    /// Reads more bytes into `buf`; false at EOF or on an error.
    async fn read_more(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A loopback HTTP/1.1 server answering `{}` to every request; counts connections and
    /// closes each after one response when `close_after_one`.
    async fn server(close_after_one: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1/filter", listener.local_addr().expect("addr"));
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // one request: headers, then Content-Length bytes of body
                        let (head_end, len) = loop {
                            if let Some(framed) = framing(&buf) {
                                break framed;
                            }
                            if !read_more(&mut tcp, &mut buf).await {
                                return;
                            }
                        };
                        while buf.len() < head_end + len {
                            if !read_more(&mut tcp, &mut buf).await {
                                return;
                            }
                        }
                        buf.drain(..head_end + len);
                        let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if tcp.write_all(resp.as_bytes()).await.is_err() || close_after_one {
                            return;
                        }
                    }
                });
            }
        });
        (url, conns)
    }

    #[tokio::test]
    async fn pool_reuses_connections() {
        let (url, conns) = server(false).await;
        let pool = Pool::default();
        for _ in 0..5 {
            let (code, body) = pool
                .post_json(&url, b"{}".to_vec(), None, Duration::from_secs(5))
                .await
                .expect("post");
            assert_eq!((code, &body[..]), (200, &b"{}"[..]));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one kept-alive connection");
        assert_eq!(pool.idle_connections(), 1);
        // without the pool: one connection per request
        post_json(&url, b"{}".to_vec(), None, Duration::from_secs(5))
            .await
            .expect("post");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn pool_replaces_connections_the_server_closed() {
        let (url, conns) = server(true).await;
        let pool = Pool::default();
        for _ in 0..3 {
            let (code, _) = pool
                .post_json(&url, b"{}".to_vec(), None, Duration::from_secs(5))
                .await
                .expect("a closed pooled connection is not an error");
            assert_eq!(code, 200);
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}
