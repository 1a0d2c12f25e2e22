//! TLS over non-blocking sockets, with the `Read`/`Write` a plain connection has, so the same
//! driving code runs over both: the load generator's client sessions (`--tls CA.pem`, the
//! certificate checked against that CA for the name `localhost`) and the Rust echo server's
//! (`--tls-cert`, `--tls-key`), both rustls.

use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

use crate::Duplex;

/// A client configuration trusting the CA certificates in the PEM file at `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = config;
    // Every connection makes a full handshake: the cost being measured.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server configuration with the certificate chain and private key in these PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// A TLS session over a connected, non-blocking byte stream.
pub struct TlsStream {
    sock: Box<dyn Duplex>,
    conn: Connection,
}

impl TlsStream {
    /// Starts a client session for `localhost` over `sock`; the handshake runs as data is
    /// written and read.
    pub fn new(config: &Arc<ClientConfig>, sock: Box<dyn Duplex>) -> io::Result<TlsStream> {
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn: conn.into(),
        })
    }

    /// Starts a server session over an accepted `sock`.
    pub fn server(config: &Arc<ServerConfig>, sock: Box<dyn Duplex>) -> io::Result<TlsStream> {
        let conn = rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn: conn.into(),
        })
    }

    /// Sends what the session has for the peer, until the socket would block.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The socket, as rustls reads it, noting whether a read came back short (the socket is
/// drained: an edge-triggered poll reports the next data).
struct Probe<'a> {
    sock: &'a mut dyn Duplex,
    short: bool,
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl Read for TlsStream {
    /// The plain text the peer sent: as much as `buf` takes, and less only once the socket is
    /// drained (so a short read means the same as on a plain socket).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                // The peer's close_notify.
                Ok(0) if filled == 0 && !buf.is_empty() => return Ok(0),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            let mut probe = Probe {
                sock: &mut *self.sock,
                short: false,
            };
            match self.conn.read_tls(&mut probe) {
                Ok(0) if filled == 0 => return Ok(0),
                Ok(0) => return Ok(filled),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.flush_tls()?;
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) => return Err(e),
            }
            let drained = probe.short;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            // Handshake messages (and any queued data) go out as soon as they can.
            self.flush_tls()?;
            if drained {
                match self.conn.reader().read(&mut buf[filled..]) {
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                return if filled > 0 {
                    Ok(filled)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Plain text written before the handshake ends is kept and sent once it has.
        let n = self.conn.writer().write(buf)?;
        self.flush_tls()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // A polite end, as a real client's: close_notify, if the socket takes it now.
        self.conn.send_close_notify();
        let _ = self.flush_tls();
    }
}

impl mio::event::Source for TlsStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.sock.deregister(registry)
    }
}
