//! Servers of our own that stand in front of (or instead of) the real services, to inject
//! faults: one that always answers a status, one that never answers, a closed port, and a
//! proxy that faults its first connections and forwards the rest to the real service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{stack_env, var};

/// A server that answers every request with `status` and a RabbitMQ-style error body.
pub async fn answering(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = r#"{"error":"boom","reason":"node is down"}"#;
                let resp = format!(
                    "HTTP/1.1 {status} Oops\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A server that accepts connections and never answers.
pub async fn silent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}")
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the proxy does with one of its first connections.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Read the request, then reset the connection (RST): no answer at all, as a stale pooled
    /// connection after a Lambda thaw.
    Reset,
    /// Answer with this status, headers and body, then close.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
}

impl Fault {
    /// A RabbitMQ-style error answer.
    pub fn rabbitmq(status: u16, retry_after: Option<u64>) -> Self {
        Self::Respond {
            status,
            headers: retry_after
                .map(|s| vec![("retry-after", s.to_string())])
                .unwrap_or_default(),
            body: r#"{"error":"unavailable","reason":"injected by the test proxy"}"#.to_owned(),
        }
    }

    /// A Kubernetes `Status` error answer, as the API server sends it for 429 and 503.
    pub fn kubernetes(status: u16, retry_after: Option<u64>) -> Self {
        let details = retry_after
            .map(|s| format!(r#","details":{{"retryAfterSeconds":{s}}}"#))
            .unwrap_or_default();
        Self::Respond {
            status,
            headers: retry_after
                .map(|s| vec![("retry-after", s.to_string())])
                .unwrap_or_default(),
            body: format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"injected by the test proxy","reason":"ServiceUnavailable","code":{status}{details}}}"#
            ),
        }
    }
}

#[derive(Clone)]
enum Mode {
    Plain {
        upstream: String,
    },
    /// TLS terminated with the API server's own certificate, and opened again towards it.
    Tls {
        upstream: String,
        acceptor: tokio_rustls::TlsAcceptor,
        connector: tokio_rustls::TlsConnector,
    },
}

/// A proxy in front of a real service: connection `i` gets `faults[i]`, later connections are
/// forwarded byte for byte. `faulted()` counts the faults served.
pub struct FaultProxy {
    pub url: String,
    served: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn faulted(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// In front of a plain-HTTP service (`http://host:port`).
    pub async fn http(upstream: &str, faults: Vec<Fault>) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Self::start("http", Mode::Plain { upstream }, faults).await
    }

    /// In front of the stack's API server.
    pub async fn kube_apiserver(faults: Vec<Fault>) -> Self {
        let env = stack_env();
        let tls = std::path::Path::new(&env["STACK_CA_FILE"])
            .parent()
            .unwrap()
            .to_owned();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(tls.join("kube-apiserver.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(tls.join("kube-apiserver.key")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&env["STACK_CA_FILE"]).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mode = Mode::Tls {
            upstream: var("STACK_KUBE_API")
                .trim_start_matches("https://")
                .to_owned(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        };
        Self::start("https", mode, faults).await
    }

    async fn start(scheme: &str, mode: Mode, faults: Vec<Fault>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            let mut next = 0;
            while let Ok((sock, _)) = listener.accept().await {
                let fault = faults.get(next).cloned();
                next += 1;
                let (mode, counter) = (mode.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = connection(sock, mode, fault, counter).await;
                });
            }
        });
        Self { url, served }
    }
}

async fn connection(
    mut sock: TcpStream,
    mode: Mode,
    fault: Option<Fault>,
    served: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    match mode {
        Mode::Plain { upstream } => match fault {
            None => {
                let mut up = TcpStream::connect(&upstream).await?;
                tokio::io::copy_bidirectional(&mut sock, &mut up)
                    .await
                    .map(drop)
            }
            Some(Fault::Reset) => {
                read_head(&mut sock).await;
                served.fetch_add(1, Ordering::SeqCst);
                reset(sock)
            }
            Some(Fault::Respond {
                status,
                headers,
                body,
            }) => {
                read_head(&mut sock).await;
                served.fetch_add(1, Ordering::SeqCst);
                respond(&mut sock, status, &headers, &body).await
            }
        },
        Mode::Tls {
            upstream,
            acceptor,
            connector,
        } => {
            let mut tls = acceptor.accept(sock).await?;
            match fault {
                None => {
                    let up = TcpStream::connect(&upstream).await?;
                    let name = ServerName::try_from("127.0.0.1").unwrap();
                    let mut up = connector.connect(name, up).await?;
                    tokio::io::copy_bidirectional(&mut tls, &mut up)
                        .await
                        .map(drop)
                }
                Some(Fault::Reset) => {
                    read_head(&mut tls).await;
                    served.fetch_add(1, Ordering::SeqCst);
                    reset(tls.into_inner().0)
                }
                Some(Fault::Respond {
                    status,
                    headers,
                    body,
                }) => {
                    read_head(&mut tls).await;
                    served.fetch_add(1, Ordering::SeqCst);
                    respond(&mut tls, status, &headers, &body).await
                }
            }
        }
    }
}

/// Reads until the end of the request head (or a second passes).
async fn read_head(sock: &mut (impl AsyncRead + Unpin)) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
}

/// Closes with RST instead of FIN: the peer sees "connection reset".
fn reset(sock: TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO))?;
    drop(sock);
    Ok(())
}

async fn respond(
    sock: &mut (impl AsyncWrite + Unpin),
    status: u16,
    headers: &[(&'static str, String)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}
