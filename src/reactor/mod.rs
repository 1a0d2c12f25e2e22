//! The I/O reactor: readiness of file descriptors, built on mio (epoll on Linux).
//!
//! Two kinds of registration share one epoll instance. asyncio's `add_reader`/`add_writer`
//! are level-triggered (a callback runs again on the next iteration for as long as its fd stays
//! ready), so fd watchers are registered level-triggered, with `epoll_ctl` called directly: mio
//! only registers edge-triggered, and emulating levels on edges costs an `EPOLL_CTL_MOD` per
//! report. Native transports read and write until the kernel says `EAGAIN` and register their
//! fd once, edge-triggered, through mio ([`Registrar::register_source`]).
//!
//! The reactor is split in two: the [`Poller`], which owns the `epoll` instance and is only
//! touched by the thread running the loop (it waits without the GIL), and the [`Registrar`],
//! which adds and removes interests and can be shared.
//!
//! A child made by `fork()` inherits the epoll instance itself, not a copy: an edge it reports
//! to one process is gone for the other, and an `epoll_ctl` from either changes both. So a
//! registrar knows whether it was made in this process ([`Registrar::inherited`]), and one
//! inherited is given an epoll instance of its own ([`Registrar::rebuild`]) before it is used.
//!
//! Pure Rust: no Python types here.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// Token of the cross-thread waker.
pub const WAKER_TOKEN: Token = Token(usize::MAX);
/// Token of the signal wake-up socket.
pub const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);

/// First token of the sources native transports register; fd watchers use the fd itself as
/// token, which stays below it.
pub const SOURCE_TOKEN_BASE: usize = 1 << 32;

/// Interest in an fd: a bit set of [`READ`] and [`WRITE`].
pub type Interests = u8;
/// Interest in readability.
pub const READ: Interests = 1;
/// Interest in writability.
pub const WRITE: Interests = 2;

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoEvent {
    /// The token the fd was registered with (the fd itself for fd registrations).
    pub token: Token,
    /// Ready for reading, or hung up / in error (a read will not block).
    pub readable: bool,
    /// Ready for writing, or hung up / in error (a write will not block).
    pub writable: bool,
    /// The peer shut down its side, or the fd is in error: reading will not block again
    /// until it reports that (a stream's end or the error), and no further report comes.
    pub closed: bool,
}

/// How many `fork()`s made this process: each child counts one more than its parent.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Starts counting forks (once per process, before the first registrar exists).
fn count_forks() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handler only increments an atomic, which is async-signal-safe, as a
        // handler run in the child of a multi-threaded process must be. A failure (ENOMEM)
        // leaves forks uncounted, as they were before this call.
        unsafe {
            libc::pthread_atfork(None, None, Some(count_fork_in_child));
        }
    });
}

/// Waits for readiness. Owned by the thread that runs the loop.
pub struct Poller {
    /// The mio poll instance (an epoll fd on Linux).
    poll: Poll,
    /// Reused event buffer, so a wait allocates nothing.
    events: Events,
}

/// Adds, changes and removes interests; wakes the poller from other threads.
pub struct Registrar {
    /// A handle on the poll instance's registry.
    registry: Registry,
    /// Wakes a poller blocked in [`Poller::poll`]; usable from any thread.
    waker: Arc<Waker>,
    /// Current interests per registered fd; an fd is registered with epoll iff present.
    interests: HashMap<RawFd, Interests>,
    /// The fork count of the process that made the epoll instance.
    forks: u64,
}

/// Creates a reactor: the poller and its registrar.
pub fn new() -> io::Result<(Poller, Registrar)> {
    count_forks();
    let (poller, registry, waker) = new_instance()?;
    Ok((
        poller,
        Registrar {
            registry,
            waker,
            interests: HashMap::new(),
            forks: FORKS.load(Ordering::Relaxed),
        },
    ))
}

/// An epoll instance: its poller, a handle on its registry and its waker.
fn new_instance() -> io::Result<(Poller, Registry, Arc<Waker>)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
    let poller = Poller {
        poll,
        events: Events::with_capacity(1024),
    };
    Ok((poller, registry, waker))
}

fn fd_token(fd: RawFd) -> Token {
    Token(fd as usize)
}

impl Poller {
    /// Waits up to `timeout` (forever if `None`) and appends the reports to `out`.
    ///
    /// mio rounds sub-millisecond timeouts up, so a timer is never woken for early.
    /// An interrupted wait (`EINTR`) is returned as an error of kind `Interrupted`.
    pub fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<IoEvent>) -> io::Result<()> {
        self.poll.poll(&mut self.events, timeout)?;
        out.extend(self.events.iter().map(|e| {
            let trouble = e.is_error() || e.is_read_closed() || e.is_write_closed();
            IoEvent {
                token: e.token(),
                readable: e.is_readable() || trouble,
                writable: e.is_writable() || trouble,
                closed: e.is_read_closed() || e.is_error(),
            }
        }));
        Ok(())
    }
}

impl Registrar {
    /// A waker that other threads use to interrupt [`Poller::poll`].
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Current interests in `fd` (0 when not registered).
    pub fn interests(&self, fd: RawFd) -> Interests {
        self.interests.get(&fd).copied().unwrap_or(0)
    }

    /// The epoll instance was made by another process, which this one was forked from.
    pub fn inherited(&self) -> bool {
        self.forks != FORKS.load(Ordering::Relaxed)
    }

    /// Moves every fd watcher, and the given native sources (fd and token, as registered with
    /// [`Registrar::register_source`]; their owner keeps that list), to a new epoll instance
    /// with a new waker, and returns its poller; the old instance, shared with the process this
    /// one was forked from, is left as that process has it. Extra sources
    /// ([`Registrar::register_token`]) are not moved: their owner registers them again. An fd
    /// closed since it was registered is dropped, as is one whose number now names a file
    /// epoll refuses (the new instance itself, say) or one the new instance already watches
    /// (its waker).
    pub fn rebuild(
        &mut self,
        sources: impl IntoIterator<Item = (RawFd, Token)>,
    ) -> io::Result<Poller> {
        let (poller, registry, waker) = new_instance()?;
        // Dropping the old handle closes only this process's descriptor of the old instance.
        self.registry = registry;
        self.waker = waker;
        self.forks = FORKS.load(Ordering::Relaxed);
        let watchers: Vec<(RawFd, Interests)> = self.interests.drain().collect();
        for (fd, interests) in watchers {
            match self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, interests) {
                Ok(()) => {
                    self.interests.insert(fd, interests);
                }
                Err(e) if is_gone(&e) || is_refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        for (fd, token) in sources {
            match self.register_source(fd, token) {
                Err(e) if is_gone(&e) || is_refused(&e) => {}
                other => other?,
            }
        }
        Ok(poller)
    }

    /// Registers an extra source (such as the signal socket) under its own token.
    pub fn register_token(&self, fd: RawFd, token: Token) -> io::Result<()> {
        self.registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
    }

    /// Registers a native transport's fd for both directions, once for its lifetime: the
    /// transport reads and writes until the kernel says `EAGAIN`, so edge-triggered reports
    /// are all it needs and no later `epoll_ctl` call is made for it.
    pub fn register_source(&self, fd: RawFd, token: Token) -> io::Result<()> {
        self.registry.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Undoes [`Registrar::register_source`]; an fd already closed has left epoll by itself.
    pub fn deregister_source(&self, fd: RawFd) -> io::Result<()> {
        match self.registry.deregister(&mut SourceFd(&fd)) {
            Err(e) if is_gone(&e) => Ok(()),
            other => other,
        }
    }

    /// Sets the interests in `fd` to exactly `interests`, registering or deregistering it.
    pub fn set(&mut self, fd: RawFd, interests: Interests) -> io::Result<()> {
        let current = self.interests(fd);
        let wanted = interests & (READ | WRITE);
        if wanted == current {
            return Ok(());
        }
        if wanted == 0 {
            self.interests.remove(&fd);
            return match self.epoll_ctl(libc::EPOLL_CTL_DEL, fd, 0) {
                // The fd was closed (and so left epoll) before it was removed from the loop,
                // or was replaced by another file: nothing is left to undo.
                Err(e) if is_gone(&e) => Ok(()),
                other => other,
            };
        }
        let (first, fallback) = if current == 0 {
            (libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD)
        } else {
            (libc::EPOLL_CTL_MOD, libc::EPOLL_CTL_ADD)
        };
        match self.epoll_ctl(first, fd, wanted) {
            // ADD: a previous file with this number was closed without being removed while
            // another reference kept it in epoll. MOD: closing the fd removed it from epoll,
            // and a new file may have taken its number.
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    || e.raw_os_error() == Some(libc::ENOENT) =>
            {
                self.epoll_ctl(fallback, fd, wanted)
            }
            other => other,
        }?;
        self.interests.insert(fd, wanted);
        Ok(())
    }

    /// One level-triggered `epoll_ctl` for an fd watcher; the event carries the fd as token.
    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, interests: Interests) -> io::Result<()> {
        let mut flags = 0;
        if interests & READ != 0 {
            flags |= libc::EPOLLIN | libc::EPOLLRDHUP;
        }
        if interests & WRITE != 0 {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: fd_token(fd).0 as u64,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call; the epoll fd belongs
        // to the registry, which is alive for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.registry.as_raw_fd(), op, fd, &mut event) };
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF))
}

/// epoll will not watch this file (an epoll instance itself, or a regular file), or already
/// does: a closed fd's number reused by the new instance's own waker.
fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EEXIST)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn poll_once(p: &mut Poller, ms: u64) -> Vec<IoEvent> {
        let mut out = Vec::new();
        p.poll(Some(Duration::from_millis(ms)), &mut out)
            .expect("poll");
        out
    }

    #[test]
    fn reports_readable_fd() {
        let (mut p, mut r) = new().expect("reactor");
        let (a, mut b) = UnixStream::pair().expect("pair");
        r.set(a.as_raw_fd(), READ).expect("register");
        assert!(poll_once(&mut p, 0).is_empty());
        b.write_all(b"x").expect("write");
        let ev = poll_once(&mut p, 1000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token, Token(a.as_raw_fd() as usize));
        assert!(ev[0].readable);
    }

    #[test]
    fn watchers_are_level_triggered() {
        let (mut p, mut r) = new().expect("reactor");
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        r.set(a.as_raw_fd(), READ).expect("register");
        b.write_all(b"xy").expect("write");
        assert_eq!(poll_once(&mut p, 1000).len(), 1);
        // Still readable: reported again with no epoll_ctl in between.
        assert_eq!(poll_once(&mut p, 0).len(), 1);
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).expect("read");
        assert!(poll_once(&mut p, 0).is_empty());
    }

    #[test]
    fn interests_combine_and_clear() {
        let (mut p, mut r) = new().expect("reactor");
        let (a, _b) = UnixStream::pair().expect("pair");
        let fd = a.as_raw_fd();
        r.set(fd, WRITE).expect("writer");
        let ev = poll_once(&mut p, 1000);
        assert!(ev[0].writable && !ev[0].readable);
        r.set(fd, READ | WRITE).expect("both");
        assert_eq!(r.interests(fd), READ | WRITE);
        r.set(fd, 0).expect("clear");
        assert_eq!(r.interests(fd), 0);
        assert!(poll_once(&mut p, 0).is_empty());
    }

    #[test]
    fn hangup_reports_readable() {
        let (mut p, mut r) = new().expect("reactor");
        let (a, b) = UnixStream::pair().expect("pair");
        r.set(a.as_raw_fd(), READ).expect("register");
        drop(b);
        let ev = poll_once(&mut p, 1000);
        assert!(ev[0].readable);
    }

    #[test]
    fn closed_fd_can_be_removed_and_its_number_reused() {
        let (_p, mut r) = new().expect("reactor");
        let (a, _b) = UnixStream::pair().expect("pair");
        let fd = a.as_raw_fd();
        r.set(fd, READ).expect("register");
        drop(a);
        r.set(fd, 0).expect("remove after close");
        let (c, _d) = UnixStream::pair().expect("pair");
        r.set(c.as_raw_fd(), READ).expect("register reused number");
    }

    #[test]
    fn a_closed_fd_can_be_removed_after_its_number_was_reused() {
        let (mut p, mut r) = new().expect("reactor");
        let (a, _b) = UnixStream::pair().expect("pair");
        let fd = a.as_raw_fd();
        r.set(fd, READ).expect("register");
        // The registered file is closed and its number reused before the loop hears of it:
        // dup2 does both at once, with no window for other threads to take the number.
        let (c, mut d) = UnixStream::pair().expect("pair");
        // SAFETY: `fd` stays owned by `a`, which closes it (now a copy of `c`) when dropped.
        let reused = unsafe { libc::dup2(c.as_raw_fd(), fd) };
        assert_eq!(reused, fd);
        r.set(fd, READ | WRITE).expect("modify falls back to add");
        d.write_all(b"x").expect("write");
        let ev = poll_once(&mut p, 1000);
        assert!(ev[0].readable && ev[0].writable);
        r.set(fd, 0).expect("remove");
        assert!(poll_once(&mut p, 0).is_empty());
        drop((a, c));
    }

    #[test]
    fn sources_report_each_new_edge_with_no_epoll_ctl() {
        let (mut p, r) = new().expect("reactor");
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        let token = Token(SOURCE_TOKEN_BASE + 7);
        r.register_source(a.as_raw_fd(), token).expect("register");
        let ev = poll_once(&mut p, 1000);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].writable && !ev[0].readable);
        b.write_all(b"x").expect("write");
        let ev = poll_once(&mut p, 1000);
        assert!(ev[0].readable && ev[0].token == token);
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).expect("read");
        // More data after a drain is a new edge: reported with no epoll_ctl in between.
        b.write_all(b"y").expect("write");
        assert!(poll_once(&mut p, 1000)[0].readable);
        r.deregister_source(a.as_raw_fd()).expect("deregister");
        b.write_all(b"z").expect("write");
        assert!(poll_once(&mut p, 0).is_empty());
        drop(a);
        r.deregister_source(b.as_raw_fd() + 1000)
            .expect("unknown fd is not an error");
    }

    #[test]
    fn rebuild_moves_everything_to_a_new_instance_and_leaves_the_old_one_alone() {
        let (mut old, mut r) = new().expect("reactor");
        let (a, mut b) = UnixStream::pair().expect("pair");
        let (c, _d) = UnixStream::pair().expect("pair");
        let (e, _f) = UnixStream::pair().expect("pair");
        let source = Token(SOURCE_TOKEN_BASE + 1);
        r.set(a.as_raw_fd(), READ).expect("watch a");
        r.register_source(c.as_raw_fd(), source)
            .expect("register c");
        // A number above those the other tests' threads take (the lowest free), so that
        // none of them opens a file under it once it is closed.
        // SAFETY: F_DUPFD takes an int; the new descriptor is closed below.
        let gone = unsafe { libc::fcntl(e.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000) };
        assert!(gone >= 1000);
        r.set(gone, READ).expect("watch e");
        // SAFETY: `gone` is this test's own descriptor, closed once.
        unsafe { libc::close(gone) };
        drop(e);
        let old_waker = r.waker();
        let mut new = r.rebuild([(c.as_raw_fd(), source)]).expect("rebuild");
        assert_eq!(r.interests(gone), 0, "a closed fd is dropped");
        b.write_all(b"x").expect("write");
        let mut tokens: Vec<Token> = poll_once(&mut new, 1000).iter().map(|e| e.token).collect();
        tokens.sort();
        assert_eq!(tokens, vec![Token(a.as_raw_fd() as usize), source]);
        // Changes made through the rebuilt registrar stay in the new instance.
        r.set(a.as_raw_fd(), 0).expect("unwatch a");
        r.deregister_source(c.as_raw_fd()).expect("deregister c");
        assert!(poll_once(&mut new, 0).is_empty());
        r.waker().wake().expect("wake");
        assert_eq!(poll_once(&mut new, 1000)[0].token, WAKER_TOKEN);
        let mut tokens: Vec<Token> = poll_once(&mut old, 1000).iter().map(|e| e.token).collect();
        tokens.sort();
        assert_eq!(tokens, vec![Token(a.as_raw_fd() as usize), source]);
        old_waker.wake().expect("wake the old instance");
        assert!(poll_once(&mut new, 0).is_empty());
        // `a` is still readable, and its watcher there level-triggered: both are reported.
        let tokens: Vec<Token> = poll_once(&mut old, 1000).iter().map(|e| e.token).collect();
        assert!(tokens.contains(&WAKER_TOKEN), "{tokens:?}");
    }

    #[test]
    fn rebuild_drops_closed_watchers_whose_numbers_the_new_instance_took() {
        let (_old, mut r) = new().expect("reactor");
        // Closed without being unwatched: the new epoll instance and its waker are given the
        // lowest free numbers, these.
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..4).map(|_| UnixStream::pair().expect("pair")).collect();
        let mut closed = Vec::new();
        let mut keep = Vec::new();
        for (x, y) in pairs {
            r.set(x.as_raw_fd(), READ).expect("watch");
            closed.push(x.as_raw_fd());
            keep.push(y);
        }
        // Before the fix the rebuild failed with EEXIST on the number the waker took.
        let mut new = r.rebuild([]).expect("rebuild");
        for fd in [new.poll.as_raw_fd(), r.registry.as_raw_fd()] {
            assert_eq!(
                r.interests(fd),
                0,
                "the new instance's own fd {fd} is not watched"
            );
        }
        // The loop unwatches each closed fd once it hears of the close. Had the waker's number
        // been kept as a watcher, that would take the waker out of the new instance. Whether
        // another test's thread opened a file under one of these numbers meanwhile does not
        // change what is asserted, so the check holds under the parallel test runner.
        for fd in closed {
            r.set(fd, 0).expect("unwatch");
        }
        r.waker().wake().expect("wake");
        let tokens: Vec<Token> = poll_once(&mut new, 1000).iter().map(|e| e.token).collect();
        assert_eq!(tokens, vec![WAKER_TOKEN]);
    }

    #[test]
    fn a_forked_child_knows_its_registrar_is_inherited() {
        let (_p, r) = new().expect("reactor");
        assert!(!r.inherited());
        // SAFETY: the child only reads an atomic and exits with `_exit`, both async-signal-safe,
        // as the child of a multi-threaded test runner requires.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if r.inherited() { 0 } else { 1 };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is this process's child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(!r.inherited(), "the parent's registrar stays its own");
    }

    #[test]
    fn waker_interrupts_poll_from_another_thread() {
        let (mut p, r) = new().expect("reactor");
        let waker = r.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().expect("wake");
        });
        let mut out = Vec::new();
        p.poll(Some(Duration::from_secs(10)), &mut out)
            .expect("poll");
        t.join().expect("join");
        assert_eq!(out[0].token, WAKER_TOKEN);
    }

    #[test]
    fn sub_millisecond_timeout_is_not_a_busy_poll() {
        let (mut p, _r) = new().expect("reactor");
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        p.poll(Some(Duration::from_micros(300)), &mut out)
            .expect("poll");
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
