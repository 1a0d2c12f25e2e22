//! Closed-loop echo load generator.
//!
//! Opens `--conns` connections (or UDP sockets) to an echo server. Each one sends a message of
//! `--size` bytes, waits until exactly those bytes have come back (checking every byte), then
//! sends the next: at most one message per connection is ever in flight. After `--warmup`
//! seconds it counts the messages completed during `--duration` seconds and their round-trip
//! latencies, and prints one JSON line. With `--pid`, it also reads that process's CPU time
//! (utime + stime, from `/proc/PID/stat`) as the measured window opens and as it closes, so the
//! server's CPU cost per message needs no signalling between processes.
//!
//! Every message is a window into a fixed pattern (byte j is j mod 251) at an offset that
//! changes from one message to the next, so an echo of the wrong bytes, stale bytes or bytes
//! in the wrong order is caught with a plain slice comparison. UDP messages also carry their
//! sequence number in the first 8 bytes: a late echo of an earlier message is counted as stale
//! and skipped, and a message whose echo has not come back within `--udp-timeout-ms` is sent
//! again, so a lost datagram never stalls its socket.
//!
//! With `--churn`, each TCP or Unix connection carries one message only: once it is echoed the
//! client closes the connection and opens a new one in its place (a non-blocking connect), so
//! the server accepts, echoes and closes a connection per message. A Unix connect refused for
//! a full backlog (`EAGAIN`) is tried again on the next turn of the poll.
//!
//! With `--tls CA.pem` the connections speak TLS (rustls, no session resumption: with
//! `--churn`, every connection is a full handshake).

use std::fs;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::tls::TlsStream;
use loadgen::{Duplex, Endpoint, Flags};
use mio::net::{TcpStream, UdpSocket, UnixStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConfig;

const USAGE: &str = "\
usage: loadgen (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT) [options]

  --conns N            connections (or UDP sockets), each with one message in flight [10]
  --size BYTES         message size [1024]; UDP: 8 to 65507
  --duration SECS      measured window [2]
  --warmup SECS        unmeasured time before the window [0.5]
  --pid PID            also report this process's CPU seconds during the window
  --udp-timeout-ms MS  resend a UDP message not echoed within this time [100]
  --stall SECS         give up when no message completes for this long [10]
  --churn 1            TCP/Unix: a new connection for every message, closed once echoed
  --tls CA.pem         TCP/Unix: TLS, trusting this CA, for the name localhost (with
                       --churn: a full handshake per connection)
  --http PATH          TCP/Unix: each message is \"GET PATH HTTP/1.1\" and its 200 response
                       (keep-alive), instead of an echo

Prints one JSON line: messages, bytes, seconds, msgs_per_s, p50_us, p99_us, ...";

const KNOWN: &[&str] = &[
    "tcp",
    "unix",
    "udp",
    "conns",
    "size",
    "duration",
    "warmup",
    "pid",
    "udp-timeout-ms",
    "stall",
    "churn",
    "tls",
    "http",
];

/// The pattern's period: prime, so consecutive offsets never give the same bytes.
const PERIOD: usize = 251;
/// Largest UDP payload over IPv4.
const MAX_UDP: usize = 65507;
/// UDP messages start with their sequence number.
const SEQ_LEN: usize = 8;

struct Config {
    endpoint: Endpoint,
    conns: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    pid: Option<u32>,
    udp_timeout: Duration,
    stall: Duration,
    churn: bool,
    tls: Option<Arc<ClientConfig>>,
    /// `--http`: the request each message sends.
    http: Option<Vec<u8>>,
}

fn seconds(flags: &Flags, name: &str, default: f64) -> Result<Duration, String> {
    let secs: f64 = flags.num(name, default)?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("--{name}: {secs} is not a duration"))
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let flags = Flags::parse(std::env::args().skip(1), KNOWN)?;
        let endpoint = Endpoint::from_flags(&flags)?;
        let conns: usize = flags.num("conns", 10)?;
        let size: usize = flags.num("size", 1024)?;
        if conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        if size == 0 {
            return Err("--size must be at least 1".into());
        }
        let tls = if flags.has("tls") {
            if matches!(endpoint, Endpoint::Udp(_)) {
                return Err("--tls is for TCP and Unix connections".into());
            }
            Some(loadgen::tls::client_config(Path::new(flags.str("tls")?))?)
        } else {
            None
        };
        let churn = flags.num("churn", 0u8)? != 0;
        if churn && matches!(endpoint, Endpoint::Udp(_)) {
            return Err("--churn is for TCP and Unix connections".into());
        }
        if matches!(endpoint, Endpoint::Udp(_)) && !(SEQ_LEN..=MAX_UDP).contains(&size) {
            return Err(format!("--size must be {SEQ_LEN} to {MAX_UDP} for UDP"));
        }
        let duration = seconds(&flags, "duration", 2.0)?;
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        let pid = if flags.has("pid") {
            Some(flags.num("pid", 0u32)?)
        } else {
            None
        };
        Ok(Config {
            endpoint,
            conns,
            size,
            duration,
            warmup: seconds(&flags, "warmup", 0.5)?,
            pid,
            udp_timeout: Duration::from_millis(flags.num("udp-timeout-ms", 100)?),
            stall: seconds(&flags, "stall", 10.0)?,
            churn: flags.num("churn", 0u8)? != 0,
            tls,
            http: if flags.has("http") {
                let path = flags.str("http")?;
                Some(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes())
            } else {
                None
            },
        })
    }
}

/// CPU time (utime + stime, in clock ticks) of a process, from `/proc/PID/stat`.
fn cpu_ticks(pid: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may contain spaces; fields after the
    // last ')' start at field 3, so utime (field 14) and stime (field 15) are at 11 and 12.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("unexpected {path}: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("unexpected {path}: {stat:?}"))
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second (AT_CLKTCK from the auxiliary vector; 100 if it cannot be read).
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = |b: &[u8]| -> u64 {
        let mut buf = [0u8; WORD];
        buf.copy_from_slice(b);
        usize::from_ne_bytes(buf) as u64
    };
    auxv.chunks_exact(2 * WORD)
        .find(|pair| word(&pair[..WORD]) == AT_CLKTCK)
        .map(|pair| word(&pair[WORD..]))
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// The window's counters. Completions before the window opens are not kept.
struct Stats {
    measuring: bool,
    messages: u64,
    latencies_ns: Vec<u64>,
    last_progress: Instant,
    resends: u64,
    stale: u64,
    refused: u64,
}

impl Stats {
    fn complete(&mut self, started: Instant) {
        let now = Instant::now();
        self.last_progress = now;
        if self.measuring {
            self.messages += 1;
            let ns = now.duration_since(started).as_nanos();
            self.latencies_ns
                .push(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}

/// What `Stream::drive` left the connection as.
#[derive(PartialEq, Eq)]
enum Drive {
    /// Both directions would block; events bring more.
    Waiting,
    /// `--churn`: its one message was echoed, the connection is done.
    Done,
}

/// A new connection to the endpoint (over TLS with `--tls`): blocking (before anything is
/// measured) or not (`--churn`, whose connects are part of the load).
fn open_stream(cfg: &Config, blocking: bool) -> io::Result<Box<dyn Duplex>> {
    let sock = open_socket(&cfg.endpoint, blocking)?;
    Ok(match &cfg.tls {
        Some(tls) => Box::new(TlsStream::new(tls, sock)?),
        None => sock,
    })
}

fn open_socket(endpoint: &Endpoint, blocking: bool) -> io::Result<Box<dyn Duplex>> {
    Ok(match endpoint {
        Endpoint::Tcp(addr) if blocking => {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Box::new(TcpStream::from_std(s))
        }
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(*addr)?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Endpoint::Unix(path) if blocking => {
            let s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_nonblocking(true)?;
            Box::new(UnixStream::from_std(s))
        }
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
        Endpoint::Udp(_) => return Err(io::Error::from(ErrorKind::Unsupported)),
    })
}

/// One TCP or Unix connection and its message in flight.
struct Stream {
    /// `None` while a `--churn` connect waits to be tried again.
    io: Option<Box<dyn Duplex>>,
    id: usize,
    seq: u64,
    /// Where this message starts in the pattern.
    off: usize,
    sent: usize,
    received: usize,
    started: Instant,
    /// `--http`: the response read so far.
    response: Vec<u8>,
}

/// The length of a complete HTTP/1.1 response at the start of `data` (headers and a
/// `Content-Length` body), `Ok(None)` while more is to come; an error for anything but 200.
fn http_response_len(data: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&data[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {status:?}"));
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or("a response without Content-Length")?;
    let total = head_end + 4 + length;
    Ok((data.len() >= total).then_some(total))
}

impl Stream {
    fn begin(&mut self) {
        self.seq += 1;
        self.off = (self.id * 7 + self.seq as usize) % PERIOD;
        self.sent = 0;
        self.received = 0;
        self.response.clear();
        self.started = Instant::now();
    }

    /// Writes what is left of `message` (`sent` bytes of it are out) until the socket would
    /// block.
    fn write_rest(&mut self, io: &mut dyn Duplex, message: &[u8]) -> Result<(), String> {
        while self.sent < message.len() {
            match io.write(&message[self.sent..]) {
                Ok(0) => return Err(format!("connection {}: write returned 0", self.id)),
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(format!("connection {}: write: {e}", self.id)),
            }
        }
        Ok(())
    }

    /// A message came back whole: counted; then the connection is done (`--churn`, returns
    /// true) or starts the next message.
    fn finish(&mut self, stats: &mut Stats, churn: bool) -> bool {
        stats.complete(self.started);
        if churn {
            return true;
        }
        self.begin();
        false
    }

    /// What a failed read means: the socket is drained for now, or the run fails.
    fn read_error(&self, e: io::Error) -> Result<Drive, String> {
        if would_block(&e) {
            return Ok(Drive::Waiting);
        }
        Err(format!("connection {}: read: {e}", self.id))
    }

    /// `--http`: sends the request, reads its response, and starts the next request each time
    /// one is complete; returns once both directions would block.
    fn drive_http(
        &mut self,
        io: &mut dyn Duplex,
        request: &[u8],
        buf: &mut [u8],
        stats: &mut Stats,
        churn: bool,
    ) -> Result<Drive, String> {
        loop {
            self.write_rest(io, request)?;
            match io.read(buf) {
                Ok(0) => return Err(format!("connection {}: the server closed it", self.id)),
                Ok(n) => {
                    self.response.extend_from_slice(&buf[..n]);
                    let done = http_response_len(&self.response)
                        .map_err(|e| format!("connection {}: {e}", self.id))?;
                    if let Some(len) = done {
                        if len != self.response.len() {
                            return Err(format!("connection {}: more than one response", self.id));
                        }
                        if self.finish(stats, churn) {
                            return Ok(Drive::Done);
                        }
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.read_error(e),
            }
        }
    }

    /// Writes what it can, reads everything available, and starts the next message each time
    /// one is fully echoed; returns once both directions would block.
    fn drive(
        &mut self,
        pattern: &[u8],
        size: usize,
        buf: &mut [u8],
        stats: &mut Stats,
        churn: bool,
        http: Option<&[u8]>,
    ) -> Result<Drive, String> {
        let Some(mut io) = self.io.take() else {
            return Ok(Drive::Waiting);
        };
        let result = match http {
            Some(request) => self.drive_http(&mut *io, request, buf, stats, churn),
            None => self.drive_io(&mut *io, pattern, size, buf, stats, churn),
        };
        self.io = Some(io);
        result
    }

    fn drive_io(
        &mut self,
        io: &mut dyn Duplex,
        pattern: &[u8],
        size: usize,
        buf: &mut [u8],
        stats: &mut Stats,
        churn: bool,
    ) -> Result<Drive, String> {
        loop {
            self.write_rest(io, &pattern[self.off..self.off + size])?;
            match io.read(buf) {
                Ok(0) => {
                    return Err(format!(
                        "connection {}: the server closed it ({} of {size} bytes of message {} \
                         echoed)",
                        self.id, self.received, self.seq
                    ))
                }
                Ok(n) => {
                    let end = self.received + n;
                    if end > self.sent {
                        return Err(format!(
                            "connection {}: {end} bytes echoed but only {} sent (message {})",
                            self.id, self.sent, self.seq
                        ));
                    }
                    let expected = &pattern[self.off + self.received..self.off + end];
                    if let Some(i) = buf[..n].iter().zip(expected).position(|(a, b)| a != b) {
                        return Err(format!(
                            "connection {}: message {} byte {} echoed as {} instead of {}",
                            self.id,
                            self.seq,
                            self.received + i,
                            buf[i],
                            expected[i]
                        ));
                    }
                    self.received = end;
                    if end == size && self.finish(stats, churn) {
                        return Ok(Drive::Done);
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.read_error(e),
            }
        }
    }
}

impl Stream {
    /// Drives the connection; with `--churn`, one whose message is done is replaced.
    fn step(
        &mut self,
        cfg: &Config,
        pattern: &[u8],
        buf: &mut [u8],
        stats: &mut Stats,
        registry: &mio::Registry,
    ) -> Result<(), String> {
        let drive = self.drive(
            pattern,
            cfg.size,
            buf,
            stats,
            cfg.churn,
            cfg.http.as_deref(),
        )?;
        if drive == Drive::Done {
            self.reconnect(cfg, registry)?;
        }
        Ok(())
    }

    /// `--churn`: closes the connection and opens its successor, which starts a new message.
    /// A connect that would block (a Unix listener's full backlog) or finds no free port
    /// leaves `io` empty, to be tried again.
    fn reconnect(&mut self, cfg: &Config, registry: &mio::Registry) -> Result<(), String> {
        if let Some(mut old) = self.io.take() {
            registry
                .deregister(&mut *old)
                .map_err(|e| format!("deregistering a connection: {e}"))?;
        }
        let mut io = match open_stream(cfg, false) {
            Ok(io) => io,
            Err(e) if would_block(&e) || e.kind() == ErrorKind::AddrNotAvailable => return Ok(()),
            Err(e) => return Err(format!("connecting to {}: {e}", cfg.endpoint.target())),
        };
        registry
            .register(
                &mut *io,
                Token(self.id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("registering a connection: {e}"))?;
        self.io = Some(io);
        self.begin();
        Ok(())
    }
}

/// One UDP socket and its message in flight.
struct Dgram {
    sock: UdpSocket,
    id: usize,
    seq: u64,
    msg: Vec<u8>,
    /// Whether `msg` is still to be sent (the last send would have blocked).
    unsent: bool,
    started: Instant,
    last_sent: Instant,
}

impl Dgram {
    fn begin(&mut self, pattern: &[u8]) {
        self.seq += 1;
        let off = (self.id * 7 + self.seq as usize) % PERIOD;
        let size = self.msg.len();
        self.msg[..SEQ_LEN].copy_from_slice(&self.seq.to_le_bytes());
        self.msg[SEQ_LEN..].copy_from_slice(&pattern[off + SEQ_LEN..off + size]);
        self.started = Instant::now();
        self.unsent = true;
    }

    fn send(&mut self, stats: &mut Stats) -> Result<(), String> {
        loop {
            match self.sock.send(&self.msg) {
                Ok(n) if n == self.msg.len() => break,
                Ok(n) => {
                    return Err(format!(
                        "socket {}: sent {n} of {} bytes",
                        self.id,
                        self.msg.len()
                    ))
                }
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                // An ICMP port unreachable from an earlier send: the resend timer retries.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    stats.refused += 1;
                    break;
                }
                Err(e) => return Err(format!("socket {}: send: {e}", self.id)),
            }
        }
        self.unsent = false;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn drive(&mut self, pattern: &[u8], buf: &mut [u8], stats: &mut Stats) -> Result<(), String> {
        if self.unsent {
            self.send(stats)?;
        }
        loop {
            match self.sock.recv(buf) {
                Ok(n) => {
                    let seq = buf
                        .get(..SEQ_LEN)
                        .filter(|_| n >= SEQ_LEN)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                    if seq != Some(self.seq) || self.unsent {
                        // A late echo of an earlier message (or of a resend of it).
                        stats.stale += 1;
                        continue;
                    }
                    if buf[..n] != self.msg[..] {
                        return Err(format!(
                            "socket {}: message {}: {n} bytes echoed do not match the {} sent",
                            self.id,
                            self.seq,
                            self.msg.len()
                        ));
                    }
                    stats.complete(self.started);
                    self.begin(pattern);
                    self.send(stats)?;
                }
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => stats.refused += 1,
                Err(e) => return Err(format!("socket {}: recv: {e}", self.id)),
            }
        }
    }

    /// Sends the message again if its echo is overdue (or its send is still pending).
    fn resend_if_due(
        &mut self,
        now: Instant,
        timeout: Duration,
        stats: &mut Stats,
    ) -> Result<(), String> {
        if self.unsent {
            // The last send would have blocked: try again even without a writable event.
            self.send(stats)?;
        } else if now.duration_since(self.last_sent) >= timeout {
            stats.resends += 1;
            self.send(stats)?;
        }
        Ok(())
    }
}

enum Clients {
    Streams(Vec<Stream>),
    Dgrams(Vec<Dgram>),
}

fn connect(cfg: &Config, pattern: &[u8], poll: &Poll) -> Result<Clients, String> {
    let interest = Interest::READABLE | Interest::WRITABLE;
    let now = Instant::now();
    match &cfg.endpoint {
        Endpoint::Tcp(_) | Endpoint::Unix(_) => {
            let mut streams = Vec::with_capacity(cfg.conns);
            for id in 0..cfg.conns {
                // Blocking connects: they are done before anything is measured.
                let mut io = open_stream(cfg, true)
                    .map_err(|e| format!("connecting to {}: {e}", cfg.endpoint.target()))?;
                poll.registry()
                    .register(&mut *io, Token(id), interest)
                    .map_err(|e| format!("registering a connection: {e}"))?;
                streams.push(Stream {
                    io: Some(io),
                    id,
                    seq: 0,
                    off: 0,
                    sent: 0,
                    received: 0,
                    started: now,
                    response: Vec::new(),
                });
            }
            Ok(Clients::Streams(streams))
        }
        Endpoint::Udp(addr) => {
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let mut dgrams = Vec::with_capacity(cfg.conns);
            for id in 0..cfg.conns {
                let mut sock = UdpSocket::bind(local)
                    .and_then(|s| s.connect(*addr).map(|()| s))
                    .map_err(|e| format!("UDP socket for {addr}: {e}"))?;
                poll.registry()
                    .register(&mut sock, Token(id), interest)
                    .map_err(|e| format!("registering a socket: {e}"))?;
                let mut d = Dgram {
                    sock,
                    id,
                    seq: 0,
                    msg: vec![0; cfg.size],
                    unsent: true,
                    started: now,
                    last_sent: now,
                };
                d.begin(pattern);
                dgrams.push(d);
            }
            Ok(Clients::Dgrams(dgrams))
        }
    }
}

struct Report {
    messages: u64,
    seconds: f64,
    latencies_ns: Vec<u64>,
    server_cpu_s: Option<f64>,
    loadgen_cpu_s: f64,
    resends: u64,
    stale: u64,
    refused: u64,
}

fn run(cfg: &Config) -> Result<Report, String> {
    let pattern: Vec<u8> = (0..cfg.size + PERIOD).map(|j| (j % PERIOD) as u8).collect();
    let mut buf = vec![0u8; (cfg.size + 1).max(256 * 1024)];
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut clients = connect(cfg, &pattern, &poll)?;

    let tick_hz = clock_ticks_per_second() as f64;
    let pid = cfg.pid.map(|p| p.to_string());
    let server_cpu = || pid.as_deref().map(cpu_ticks).transpose();
    let own_cpu = || cpu_ticks("self");

    let start = Instant::now();
    let mut stats = Stats {
        measuring: false,
        messages: 0,
        latencies_ns: Vec::new(),
        last_progress: start,
        resends: 0,
        stale: 0,
        refused: 0,
    };
    // Start every connection's first message; from then on events drive them.
    match &mut clients {
        Clients::Streams(streams) => {
            for s in streams.iter_mut() {
                s.begin();
                s.step(cfg, &pattern, &mut buf, &mut stats, poll.registry())?;
            }
        }
        Clients::Dgrams(dgrams) => {
            for d in dgrams.iter_mut() {
                d.drive(&pattern, &mut buf, &mut stats)?;
            }
        }
    }

    let window_opens = start + cfg.warmup;
    let mut window: Option<(Instant, Option<u64>, u64)> = None; // (opened, server, own ticks)
    loop {
        let now = Instant::now();
        if window.is_none() && now >= window_opens {
            window = Some((Instant::now(), server_cpu()?, own_cpu()?));
            stats.measuring = true;
            stats.messages = 0;
            stats.latencies_ns.clear();
            stats.resends = 0;
            stats.stale = 0;
            stats.refused = 0;
        }
        let deadline = match window {
            Some((opened, _, _)) => opened + cfg.duration,
            None => window_opens,
        };
        if let Some((opened, server0, own0)) = window {
            if now >= deadline {
                let server1 = server_cpu()?;
                let own1 = own_cpu()?;
                let closed = Instant::now();
                let server_cpu_s = match (server0, server1) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tick_hz),
                    _ => None,
                };
                return Ok(Report {
                    messages: stats.messages,
                    seconds: closed.duration_since(opened).as_secs_f64(),
                    latencies_ns: stats.latencies_ns,
                    server_cpu_s,
                    loadgen_cpu_s: own1.saturating_sub(own0) as f64 / tick_hz,
                    resends: stats.resends,
                    stale: stats.stale,
                    refused: stats.refused,
                });
            }
        }
        if now.duration_since(stats.last_progress) >= cfg.stall {
            return Err(format!(
                "no message completed for {:.1} s: the server is stuck or gone",
                cfg.stall.as_secs_f64()
            ));
        }
        let mut timeout = deadline.saturating_duration_since(now);
        timeout = timeout.min(cfg.stall);
        match &clients {
            Clients::Dgrams(_) => timeout = timeout.min(cfg.udp_timeout / 4),
            Clients::Streams(streams) if streams.iter().any(|s| s.io.is_none()) => {
                timeout = timeout.min(Duration::from_millis(1));
            }
            Clients::Streams(_) => {}
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        match &mut clients {
            Clients::Streams(streams) => {
                for ev in events.iter() {
                    if let Some(s) = streams.get_mut(ev.token().0) {
                        s.step(cfg, &pattern, &mut buf, &mut stats, poll.registry())?;
                    }
                }
                // Connects refused for a full backlog are tried again.
                for s in streams.iter_mut().filter(|s| s.io.is_none()) {
                    s.reconnect(cfg, poll.registry())?;
                }
            }
            Clients::Dgrams(dgrams) => {
                for ev in events.iter() {
                    if let Some(d) = dgrams.get_mut(ev.token().0) {
                        d.drive(&pattern, &mut buf, &mut stats)?;
                    }
                }
                let now = Instant::now();
                for d in dgrams.iter_mut() {
                    d.resend_if_due(now, cfg.udp_timeout, &mut stats)?;
                }
            }
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted values, in microseconds.
fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1000.0
}

fn json(cfg: &Config, mut r: Report) -> String {
    r.latencies_ns.sort_unstable();
    let target = cfg.endpoint.target();
    let server_cpu = r
        .server_cpu_s
        .map_or_else(|| "null".to_string(), |s| format!("{s:.3}"));
    format!(
        "{{\"transport\": \"{}\", \"target\": \"{}\", \"conns\": {}, \"size\": {}, \
         \"messages\": {}, \"bytes\": {}, \"seconds\": {:.4}, \"msgs_per_s\": {:.1}, \
         \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"max_us\": {:.1}, \"server_cpu_s\": {}, \
         \"loadgen_cpu_s\": {:.3}, \"udp_resends\": {}, \"udp_stale\": {}, \"udp_refused\": {}}}",
        cfg.endpoint.kind(),
        target.replace('\\', "\\\\").replace('"', "\\\""),
        cfg.conns,
        cfg.size,
        r.messages,
        r.messages * cfg.size as u64,
        r.seconds,
        r.messages as f64 / r.seconds,
        percentile_us(&r.latencies_ns, 50.0),
        percentile_us(&r.latencies_ns, 99.0),
        r.latencies_ns.last().map_or(0.0, |&ns| ns as f64 / 1000.0),
        server_cpu,
        r.loadgen_cpu_s,
        r.resends,
        r.stale,
        r.refused,
    )
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_args() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("loadgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(report) => {
            println!("{}", json(&cfg, report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&v, 50.0), 50.0);
        assert_eq!(percentile_us(&v, 99.0), 99.0);
        assert_eq!(percentile_us(&[7000], 99.0), 7.0);
        assert_eq!(percentile_us(&[], 50.0), 0.0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_ticks("self").is_ok());
        assert!(clock_ticks_per_second() > 0);
    }
}
