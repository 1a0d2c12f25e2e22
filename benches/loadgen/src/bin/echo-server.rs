//! A single-threaded echo server in plain Rust over mio: the floor the Python event loops'
//! echo servers are compared with (no interpreter, no event-loop machinery, just epoll and the
//! system calls an echo needs).
//!
//! `echo-server --tcp HOST:PORT | --unix PATH | --udp HOST:PORT` prints the address it listens
//! on (the actual port when given port 0) as one line on stdout, then echoes until killed.
//! With `--tls-cert PEM --tls-key PEM`, streams speak TLS (rustls: the same protocol work the
//! Python servers' OpenSSL does, by another library).
//! Streams: every byte read is written back before more is read from that connection, and a
//! read shorter than the buffer drained the socket: the next read waits for epoll to report
//! new data (the registration is edge-triggered), rather than spending a system call to learn
//! that the socket is empty -- as oxloop's and libuv's streams do. UDP:
//! each datagram goes back to its sender; one that cannot be sent at once is dropped (the
//! load generator resends).

use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;

use std::path::Path;
use std::sync::Arc;

use loadgen::tls::{server_config, TlsStream};
use loadgen::{Duplex, Endpoint, Flags};
use mio::net::{TcpListener, UdpSocket, UnixListener};
use mio::{Events, Interest, Poll, Token};

const USAGE: &str = "usage: echo-server (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT) \
                     [--tls-cert PEM --tls-key PEM]";

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 256 * 1024;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Box<dyn Duplex>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Listener::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}

struct Conn {
    io: Box<dyn Duplex>,
    /// Bytes read and not yet written back: only what a write left over is copied here, so a
    /// connection costs no buffer of its own (reads go to the server's one buffer).
    pending: Vec<u8>,
    /// `pending[start..]` is still to be written.
    start: usize,
    /// The last read came up short and no readiness was reported since.
    drained: bool,
}

/// Writes `data`; `Ok(n)`: `n` bytes taken before the socket would block.
fn write_some(io: &mut dyn Duplex, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match io.write(&data[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Conn {
    /// Echoes until both directions would block or the socket is drained. `readable`: epoll
    /// reported it readable; `closing`: it reported the peer's end (or an error), which a
    /// short read leaves to be read. `Ok(false)`: the peer closed.
    fn drive(&mut self, buf: &mut [u8], readable: bool, closing: bool) -> io::Result<bool> {
        if readable {
            self.drained = false;
        }
        // What a TLS session could not send before (nothing for a plain socket).
        self.io.flush()?;
        if self.start < self.pending.len() {
            self.start += write_some(&mut *self.io, &self.pending[self.start..])?;
            if self.start < self.pending.len() {
                return Ok(true);
            }
            self.pending.clear();
            self.start = 0;
        }
        loop {
            if self.drained {
                return Ok(true);
            }
            match self.io.read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.drained = n < buf.len() && !closing;
                    let sent = write_some(&mut *self.io, &buf[..n])?;
                    if sent < n {
                        self.pending.extend_from_slice(&buf[sent..n]);
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn serve_streams(
    listener: Listener,
    mut poll: Poll,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    let mut listener = listener;
    match &mut listener {
        Listener::Tcp(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
        Listener::Unix(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
    }
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; BUF];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    let io = match listener.accept() {
                        Ok(io) => io,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            eprintln!("echo-server: accept: {e}");
                            break;
                        }
                    };
                    let mut io: Box<dyn Duplex> = match &tls {
                        Some(config) => Box::new(TlsStream::server(config, io)?),
                        None => io,
                    };
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry().register(
                        &mut *io,
                        Token(slot),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[slot] = Some(Conn {
                        io,
                        pending: Vec::new(),
                        start: 0,
                        drained: false,
                    });
                }
                continue;
            }
            let slot = ev.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let closing = ev.is_read_closed() || ev.is_error();
            let open = conn
                .drive(&mut buf, ev.is_readable(), closing)
                .unwrap_or_else(|e| {
                    if e.kind() != ErrorKind::ConnectionReset && e.kind() != ErrorKind::BrokenPipe {
                        eprintln!("echo-server: connection {slot}: {e}");
                    }
                    false
                });
            if !open {
                if let Some(mut gone) = conns[slot].take() {
                    poll.registry().deregister(&mut *gone.io)?;
                }
            }
        }
    }
}

fn serve_udp(mut sock: UdpSocket, mut poll: Poll) -> io::Result<()> {
    poll.registry()
        .register(&mut sock, LISTENER, Interest::READABLE)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(16);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, peer)) => match sock.send_to(&buf[..n], peer) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => eprintln!("echo-server: send to {peer}: {e}"),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // An ICMP error from an earlier reply to a peer that has gone.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn announce(address: impl std::fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{address}")?;
    out.flush()
}

fn run(endpoint: Endpoint, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<()> {
    let poll = Poll::new()?;
    match endpoint {
        Endpoint::Tcp(addr) => {
            let l = TcpListener::bind(addr)?;
            announce(l.local_addr()?)?;
            serve_streams(Listener::Tcp(l), poll, tls)
        }
        Endpoint::Unix(path) => {
            let l = UnixListener::bind(&path)?;
            announce(path.display())?;
            serve_streams(Listener::Unix(l), poll, tls)
        }
        Endpoint::Udp(_) if tls.is_some() => Err(io::Error::new(
            ErrorKind::InvalidInput,
            "TLS is for stream sockets",
        )),
        Endpoint::Udp(addr) => {
            let s = UdpSocket::bind(addr)?;
            announce(s.local_addr()?)?;
            serve_udp(s, poll)
        }
    }
}

fn main() -> ExitCode {
    let known = ["tcp", "unix", "udp", "tls-cert", "tls-key"];
    let parsed = Flags::parse(std::env::args().skip(1), &known).and_then(|flags| {
        let endpoint = Endpoint::from_flags(&flags)?;
        let tls = match (flags.has("tls-cert"), flags.has("tls-key")) {
            (false, false) => None,
            (true, true) => Some(server_config(
                Path::new(flags.str("tls-cert")?),
                Path::new(flags.str("tls-key")?),
            )?),
            _ => return Err("--tls-cert and --tls-key go together".to_string()),
        };
        Ok((endpoint, tls))
    });
    let (endpoint, tls) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("echo-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(endpoint, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}
