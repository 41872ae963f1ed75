//! TLS for every listener and client of understudy's processes (rustls
//! with the `ring` provider; no OpenSSL).
//!
//! Each process has one certificate, its key, and the CA that signed the
//! cluster's certificates. The certificate serves its listeners and is
//! offered as the client certificate on its own connections (heartbeats,
//! replication, forwarding), so one file per process is enough for mutual
//! TLS. Servers are verified against the CA, by the name or IP address the
//! peer was addressed with.
//!
//! [`Tls`] holds the configurations built from the files and rebuilds them
//! when the files change (checked every second) or on SIGHUP; each new
//! connection takes the configuration current when it starts, so
//! established connections keep theirs and nothing is dropped. A reload
//! that fails (a key that does not match the certificate, a file half
//! written) keeps the previous configuration and says why in the log.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A handshake not finished within this is abandoned (a peer that connects
/// and sends nothing holds nothing for long).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The files a process's TLS is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, this process's certificate first, and its
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Only a client (the
    /// operator CLI) may go without.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// PEM certificates of the CA(s) trusted to sign the cluster's
    /// certificates.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files from the `tls_cert`, `tls_key` and `tls_ca` settings:
    /// all three or none.
    pub fn from_settings(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                identity: Some((cert, key)),
                ca,
            })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    ("--tls-cert", cert.is_none()),
                    ("--tls-key", key.is_none()),
                    ("--tls-ca", ca.is_none()),
                ]
                .into_iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| n)
                .collect();
                Err(format!(
                    "TLS needs a certificate, its key and the cluster's CA; {} missing \
                     (deploy/make-certs.sh makes all three for a local cluster)",
                    missing.join(" and ")
                ))
            }
        }
    }

    /// A client's files: the CA, and a certificate with its key when the
    /// servers ask for one (mutual TLS).
    pub fn client(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), None, None) => Ok(Some(TlsFiles { identity: None, ca })),
            (ca, cert, key) => TlsFiles::from_settings(cert, key, ca),
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.ca.as_path()];
        if let Some((cert, key)) = &self.identity {
            paths.extend([cert.as_path(), key.as_path()]);
        }
        paths
    }
}

/// Size and modification time of each file: a change in either is a
/// change.
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Servers {
    /// Listeners that do not ask for a client certificate (client API,
    /// RESP: clients prove themselves with a token).
    clients: Arc<ServerConfig>,
    /// Listeners that require a client certificate signed by the CA when
    /// mutual TLS is on (the replication port, the arbiter's API).
    peers: Arc<ServerConfig>,
}

struct Loaded {
    stamp: Stamp,
    /// `None` for a client without a certificate of its own.
    servers: Option<Servers>,
    client: Arc<ClientConfig>,
}

/// A process's TLS: its current configurations, rebuilt when the files
/// change.
pub struct Tls {
    files: TlsFiles,
    client_auth: bool,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(files: &TlsFiles) -> Stamp {
    files
        .paths()
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a PEM private key from {}: {e}", path.display()))
}

fn build(files: &TlsFiles, client_auth: bool) -> Result<Loaded, String> {
    let stamp = stamp(files);
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca, "CA file")? {
        roots
            .add(ca)
            .map_err(|e| format!("the CA file {}: {e}", files.ca.display()))?;
    }
    let roots = Arc::new(roots);
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone());
    let Some((cert, key)) = &files.identity else {
        return Ok(Loaded {
            stamp,
            servers: None,
            client: Arc::new(client.with_no_client_auth()),
        });
    };
    let chain = read_certs(cert, "certificate")?;
    let key_der = read_key(key)?;
    let mismatch = |e: rustls::Error| {
        format!(
            "the certificate {} and the key {} cannot be used together: {e}",
            cert.display(),
            key.display()
        )
    };
    let server_builder = || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
    };
    let clients = Arc::new(
        server_builder()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(mismatch)?,
    );
    let peers = if client_auth {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| format!("the CA file {}: {e}", files.ca.display()))?;
        Arc::new(
            server_builder()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key_der.clone_key())
                .map_err(mismatch)?,
        )
    } else {
        clients.clone()
    };
    let client = client
        .with_client_auth_cert(chain, key_der)
        .map_err(mismatch)?;
    Ok(Loaded {
        stamp,
        servers: Some(Servers { clients, peers }),
        client: Arc::new(client),
    })
}

/// Which listener a connection arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Clients with tokens: no client certificate asked for.
    Clients,
    /// Other nodes: a client certificate is required under mutual TLS.
    Peers,
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles, client_auth: bool) -> Result<Arc<Tls>, String> {
        let loaded = build(&files, client_auth)?;
        Ok(Arc::new(Tls {
            files,
            client_auth,
            loaded: RwLock::new(loaded),
        }))
    }

    /// A server process's TLS from its `tls_cert`, `tls_key`, `tls_ca` and
    /// `tls_client_auth` settings; `None` without any.
    pub fn from_settings(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        client_auth: Option<bool>,
    ) -> Result<Option<Arc<Tls>>, String> {
        let tls = TlsFiles::from_settings(cert, key, ca)?
            .map(|files| Tls::load(files, client_auth.unwrap_or(false)))
            .transpose()?;
        if tls.is_none() && client_auth == Some(true) {
            return Err("tls_client_auth needs TLS: set --tls-cert, --tls-key and --tls-ca".into());
        }
        Ok(tls)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether peers must present a certificate signed by the CA.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    /// Rebuilds the configurations from the files. Ok(false): the files
    /// did not change (unless `force`).
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        if !force && stamp(&self.files) == self.loaded.read().stamp {
            return Ok(false);
        }
        match build(&self.files, self.client_auth) {
            Ok(new) => {
                *self.loaded.write() = new;
                Ok(true)
            }
            Err(e) => {
                // Not retried until the files change again.
                self.loaded.write().stamp = stamp(&self.files);
                Err(e)
            }
        }
    }

    /// Reloads on a change of the files or on SIGHUP, until `stop`.
    pub fn watch(self: Arc<Self>, stop: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(stop);
            loop {
                let force = tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                match self.reload(force) {
                    Ok(true) => tracing::info!(
                        ca = %self.files.ca.display(),
                        "TLS certificate, key and CA reloaded; new connections use them"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "TLS files changed but cannot be used; still serving with the previous ones"
                    ),
                }
            }
        });
    }

    /// The server side of a handshake on `io`, bounded by
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<S>(&self, io: S, side: Side) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = {
            let loaded = self.loaded.read();
            let Some(servers) = &loaded.servers else {
                return Err(io::Error::other(
                    "this TLS configuration has no certificate of its own to serve with",
                ));
            };
            match side {
                Side::Clients => servers.clients.clone(),
                Side::Peers => servers.peers.clone(),
            }
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(io))
            .await
            .map_err(|_| timed_out())??;
        Ok(MaybeTls::Server(Box::new(stream)))
    }

    /// The client side of a handshake with the server addressed as
    /// `host` (a DNS name or an IP address, as in its URL), bounded by
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn connect<S>(&self, host: &str, io: S) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a DNS name or IP address a certificate can name"),
            )
        })?;
        let config = self.loaded.read().client.clone();
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TlsConnector::from(config).connect(name, io),
        )
        .await
        .map_err(|_| timed_out())??;
        Ok(MaybeTls::Client(Box::new(stream)))
    }

    /// The client configuration current now (for libraries that make
    /// their own connections).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.loaded.read().client.clone()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the TLS handshake did not finish within {HANDSHAKE_TIMEOUT:?}"),
    )
}

/// The host part of `host:port` (an IPv6 address keeps no brackets).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rfind(':') {
        Some(i) if !addr[i + 1..].contains(']') => &addr[..i],
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A connection, in clear or in TLS.
pub enum MaybeTls<S> {
    Plain(S),
    Server(Box<tokio_rustls::server::TlsStream<S>>),
    Client(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    /// The connection under TLS.
    pub fn get_ref(&self) -> &S {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Server(t) => t.get_ref().0,
            MaybeTls::Client(t) => t.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTls::Plain(_))
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            MaybeTls::Server($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            MaybeTls::Client($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Server(t) => t.is_write_vectored(),
            MaybeTls::Client(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}

impl hyper_util::client::legacy::connect::Connection for MaybeTls<TcpStream> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Connects to `addr` (`host:port`) within `timeout`, in TLS when `tls` is
/// given: the replication stream and the RESP forward.
pub async fn connect(
    addr: &str,
    tls: Option<&Tls>,
    timeout: Duration,
) -> Result<MaybeTls<TcpStream>, String> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(MaybeTls::Plain(tcp)),
        Some(tls) => tls
            .connect(host_of(addr), tcp)
            .await
            .map_err(|e| format!("TLS with {addr} failed: {e}")),
    }
}

/// Connections accepted on a listener, handshaken (when TLS is on) by a
/// task each, so a slow or silent peer never holds up the next one; an
/// axum listener.
pub struct Incoming<S> {
    rx: tokio::sync::mpsc::Receiver<(MaybeTls<S>, SocketAddr)>,
    local: SocketAddr,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Incoming<S> {
    /// Accepts on `listener`; `wrap` sees each TCP connection first (the
    /// replica's acknowledgement gate sits there, under TLS, so every
    /// system call that writes is checked).
    pub fn new<F>(
        listener: TcpListener,
        tls: Option<(Arc<Tls>, Side)>,
        wrap: F,
    ) -> io::Result<Incoming<S>>
    where
        F: Fn(TcpStream) -> S + Send + 'static,
    {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // briefly instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let io = wrap(tcp);
                match &tls {
                    None => {
                        if tx.send((MaybeTls::Plain(io), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some((tls, side)) => {
                        let (tls, side, tx) = (tls.clone(), *side, tx.clone());
                        tokio::spawn(async move {
                            match tls.accept(io, side).await {
                                Ok(s) => {
                                    let _ = tx.send((s, peer)).await;
                                }
                                Err(e) => log_handshake_failure(peer, &e),
                            }
                        });
                    }
                }
            }
        });
        Ok(Incoming { rx, local })
    }
}

/// A failed handshake, logged with the peer's address (a client without
/// the CA's certificate, a plaintext client on a TLS port); at most once a
/// minute per address.
pub fn log_handshake_failure(peer: SocketAddr, e: &io::Error) {
    static LIMIT: std::sync::LazyLock<crate::auth::PeerLogLimit> =
        std::sync::LazyLock::new(Default::default);
    if let Some(held_back) = LIMIT.allow(peer) {
        tracing::warn!(%peer, error = %e, earlier_not_logged = held_back,
            "TLS handshake failed; connection closed");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> axum::serve::Listener for Incoming<S> {
    type Io = MaybeTls<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The peer's address as axum's connect info, for handlers behind an
/// [`Incoming`] listener.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl<S> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming<S>>>
    for Peer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming<S>>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Whether `addr` may serve without TLS: loopback only, unless the
/// operator said `--insecure-plaintext`.
pub fn check_plaintext(
    name: &str,
    addr: SocketAddr,
    tls: bool,
    insecure_plaintext: bool,
) -> Result<(), String> {
    if tls || insecure_plaintext || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{name}={addr} is not a loopback address and TLS is not configured: everything sent \
         to it (values, tokens, heartbeats) would cross the network in clear text; set \
         --tls-cert, --tls-key and --tls-ca (deploy/make-certs.sh makes them), or pass \
         --insecure-plaintext if the network is trusted"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7100"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7100"), "::1");
        assert_eq!(host_of("replica-0.understudy:7100"), "replica-0.understudy");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn all_three_files_or_none() {
        assert_eq!(TlsFiles::from_settings(None, None, None), Ok(None));
        let err = TlsFiles::from_settings(Some("c".into()), None, None).unwrap_err();
        assert!(err.contains("--tls-key and --tls-ca missing"), "{err}");
    }

    #[test]
    fn plaintext_only_on_loopback_unless_insisted() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_plaintext("listen", lo, false, false).is_ok());
        let err = check_plaintext("listen", any, false, false).unwrap_err();
        assert!(err.contains("listen=0.0.0.0:1") && err.contains("--insecure-plaintext"));
        assert!(check_plaintext("listen", any, true, false).is_ok());
        assert!(check_plaintext("listen", any, false, true).is_ok());
    }

    #[test]
    fn unreadable_files_are_named() {
        let files = TlsFiles {
            identity: Some((
                "/nonexistent/cert.pem".into(),
                "/nonexistent/key.pem".into(),
            )),
            ca: "/nonexistent/ca.pem".into(),
        };
        let err = Tls::load(files, false).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
