//! The system calls of the native transports, each returning `io::Result` and retrying on
//! `EINTR`. Pure Rust: no Python types here.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Runs a libc call returning -1 on error, retrying while it is interrupted by a signal.
macro_rules! syscall {
    ($call:expr) => {
        loop {
            // SAFETY: each caller passes pointers and lengths derived from live Rust slices
            // that outlive the call; the kernel reads or writes only within them.
            let res = unsafe { $call };
            if res == -1 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(err);
            }
            break Ok(res);
        }
    };
}

fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: same layout; the callers below only let the kernel write initialized bytes.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// `recv(fd, buf)`: the number of bytes read, 0 at end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_uninit(fd, as_uninit(buf))
}

/// `recv` into memory not yet initialized; the first `n` bytes are, once it returns `n`.
pub fn recv_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    syscall!(libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)).map(|n| n as usize)
}

/// `recvfrom(fd, buf)`: one datagram and its sender's address (`addr_len` in: the room in
/// `addr`; out: the length of the address).
pub fn recv_from(
    fd: RawFd,
    buf: &mut [u8],
    addr: &mut libc::sockaddr_storage,
    addr_len: &mut libc::socklen_t,
) -> io::Result<usize> {
    let addr_ptr: *mut libc::sockaddr_storage = addr;
    syscall!(libc::recvfrom(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        0,
        addr_ptr.cast(),
        addr_len
    ))
    .map(|n| n as usize)
}

/// `sendto(fd, buf, addr)` without `SIGPIPE`.
pub fn send_to(
    fd: RawFd,
    buf: &[u8],
    addr: &libc::sockaddr_storage,
    addr_len: libc::socklen_t,
) -> io::Result<usize> {
    let addr_ptr: *const libc::sockaddr_storage = addr;
    syscall!(libc::sendto(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_NOSIGNAL,
        addr_ptr.cast(),
        addr_len
    ))
    .map(|n| n as usize)
}

/// `send(fd, buf)` without raising `SIGPIPE` on a closed peer (`EPIPE` is returned instead).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    syscall!(libc::send(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_NOSIGNAL
    ))
    .map(|n| n as usize)
}

/// A gathering `send`: all of `bufs` in one `sendmsg`, without `SIGPIPE`.
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [only] = bufs {
        return send(fd, only);
    }
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    syscall!(libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// `read(fd, buf)`, for pipes and other files `recv` does not take.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    read_uninit(fd, as_uninit(buf))
}

/// `read` into memory not yet initialized, as [`recv_uninit`].
pub fn read_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    syscall!(libc::read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// `write(fd, buf)`. Python ignores `SIGPIPE`, so a closed reader shows as `EPIPE`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    syscall!(libc::write(fd, buf.as_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// A gathering `write`: all of `bufs` in one `writev`.
pub fn write_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [only] = bufs {
        return write(fd, only);
    }
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; writev reads only the
    // `bufs.len()` entries.
    let iov = bufs.as_ptr().cast::<libc::iovec>();
    let count = bufs.len().min(libc::c_int::MAX as usize) as libc::c_int;
    syscall!(libc::writev(fd, iov, count)).map(|n| n as usize)
}

/// `fcntl(fd, F_SETPIPE_SZ, size)`: a pipe's capacity (the kernel rounds it up to a power of
/// two pages).
pub fn set_pipe_size(fd: RawFd, size: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    syscall!(libc::fcntl(fd, libc::F_SETPIPE_SZ, size)).map(drop)
}

/// `accept4(fd)`: a new connection, non-blocking and close-on-exec, and its peer's address.
pub fn accept(
    fd: RawFd,
    peer: &mut libc::sockaddr_storage,
    peer_len: &mut libc::socklen_t,
) -> io::Result<RawFd> {
    let peer_ptr: *mut libc::sockaddr_storage = peer;
    syscall!(libc::accept4(
        fd,
        peer_ptr.cast(),
        peer_len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))
}

/// `connect(fd, addr)` on a non-blocking socket: `EINPROGRESS` while it goes on.
pub fn connect(
    fd: RawFd,
    addr: &libc::sockaddr_storage,
    addr_len: libc::socklen_t,
) -> io::Result<()> {
    let addr_ptr: *const libc::sockaddr_storage = addr;
    syscall!(libc::connect(fd, addr_ptr.cast(), addr_len)).map(drop)
}

/// The socket's pending error (`SO_ERROR`), cleared by reading it: 0 for none.
pub fn socket_error(fd: RawFd) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let err_ptr: *mut libc::c_int = &mut err;
    syscall!(libc::getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        err_ptr.cast(),
        &mut len
    ))?;
    Ok(err)
}

/// `getpeername(fd)` into `addr`.
pub fn peer_name(
    fd: RawFd,
    addr: &mut libc::sockaddr_storage,
    addr_len: &mut libc::socklen_t,
) -> io::Result<()> {
    let addr_ptr: *mut libc::sockaddr_storage = addr;
    syscall!(libc::getpeername(fd, addr_ptr.cast(), addr_len)).map(drop)
}

/// `getsockname(fd)` into `addr`.
pub fn sock_name(
    fd: RawFd,
    addr: &mut libc::sockaddr_storage,
    addr_len: &mut libc::socklen_t,
) -> io::Result<()> {
    let addr_ptr: *mut libc::sockaddr_storage = addr;
    syscall!(libc::getsockname(fd, addr_ptr.cast(), addr_len)).map(drop)
}

/// Turns off Nagle's algorithm on a TCP socket, as asyncio's `_set_nodelay` does.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    let on_ptr: *const libc::c_int = &on;
    syscall!(libc::setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        on_ptr.cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(drop)
}

/// Closes a file descriptor this process owns. Not retried on `EINTR`: on Linux the
/// descriptor is released even then, and a retry could close one opened meanwhile.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: `close` takes no pointers; callers own `fd` and forget it afterwards.
    if unsafe { libc::close(fd) } == -1 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

/// `shutdown(fd, SHUT_WR)`: the peer sees end of stream; reading goes on.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(libc::shutdown(fd, libc::SHUT_WR)).map(drop)
}

extern "C" {
    // POSIX, in every libc; the `libc` crate does not declare it.
    #[link_name = "inet_ntop"]
    fn c_inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

fn ntop(family: libc::c_int, src: *const libc::c_void) -> Option<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `src` points at an address of `family` borrowed by the public callers below for
    // the duration of the call; `buf` has room for any textual IPv4/IPv6 address
    // (INET6_ADDRSTRLEN is 46).
    let out = unsafe { c_inet_ntop(family, src, buf.as_mut_ptr(), buf.len() as _) };
    if out.is_null() {
        return None;
    }
    // SAFETY: on success inet_ntop wrote a NUL-terminated string into `buf`.
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(text.to_string_lossy().into_owned())
}

/// The text of an IPv4 address, as the `socket` module gives it (it calls `inet_ntop` too).
pub fn ipv4_text(addr: &libc::in_addr) -> Option<String> {
    ntop(libc::AF_INET, (addr as *const libc::in_addr).cast())
}

/// The text of an IPv6 address, as the `socket` module gives it.
pub fn ipv6_text(addr: &libc::in6_addr) -> Option<String> {
    ntop(libc::AF_INET6, (addr as *const libc::in6_addr).cast())
}

/// Whether an error only means "not now".
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn gathering_send_keeps_order() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let parts = [IoSlice::new(b"ab"), IoSlice::new(b"cd"), IoSlice::new(b"e")];
        assert_eq!(send_vectored(a.as_raw_fd(), &parts).expect("send"), 5);
        let mut got = [0u8; 5];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"abcde");
    }

    #[test]
    fn recv_on_an_empty_nonblocking_socket_would_block() {
        let (a, _b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let err = recv(a.as_raw_fd(), &mut [0u8; 4]).expect_err("nothing to read");
        assert!(would_block(&err));
    }

    #[test]
    fn send_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().expect("pair");
        drop(b);
        let err = send(a.as_raw_fd(), b"x").expect_err("peer gone");
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn datagrams_carry_their_sender() {
        use std::net::UdpSocket;
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        b.send_to(b"ping", a.local_addr().expect("addr"))
            .expect("send");
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut buf = [0u8; 16];
        let n = recv_from(a.as_raw_fd(), &mut buf, &mut addr, &mut len).expect("recv");
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(libc::c_int::from(addr.ss_family), libc::AF_INET);
        send_to(a.as_raw_fd(), b"pong", &addr, len).expect("reply");
        let (n, from) = b.recv_from(&mut buf).expect("recv reply");
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from, a.local_addr().expect("addr"));
    }

    #[test]
    fn addresses_read_as_the_socket_module_writes_them() {
        let v4 = libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        };
        assert_eq!(ipv4_text(&v4).as_deref(), Some("127.0.0.1"));
        let mut v6 = libc::in6_addr { s6_addr: [0; 16] };
        v6.s6_addr[15] = 1;
        assert_eq!(ipv6_text(&v6).as_deref(), Some("::1"));
        // The deprecated IPv4-compatible form keeps its dotted tail, as glibc writes it.
        v6.s6_addr[12..].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(ipv6_text(&v6).as_deref(), Some("::1.2.3.4"));
    }

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(made, 0);
        (fds[0], fds[1])
    }

    fn close(fd: RawFd) {
        // SAFETY: `fd` came from `pipe()` in this test and is closed once.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn pipes_carry_gathered_writes_in_order() {
        let (r, w) = pipe();
        let parts = [IoSlice::new(b"ab"), IoSlice::new(b"cd"), IoSlice::new(b"e")];
        assert_eq!(write_vectored(w, &parts).expect("writev"), 5);
        let mut got = [0u8; 8];
        assert_eq!(read(r, &mut got).expect("read"), 5);
        assert_eq!(&got[..5], b"abcde");
        let err = read(r, &mut got).expect_err("drained");
        assert!(would_block(&err));
        close(w);
        assert_eq!(read(r, &mut got).expect("eof"), 0);
        close(r);
    }

    #[test]
    fn a_pipe_can_grow() {
        let (r, w) = pipe();
        set_pipe_size(w, 1 << 20).expect("F_SETPIPE_SZ");
        // SAFETY: plain fcntl query on a descriptor this test owns.
        let size = unsafe { libc::fcntl(w, libc::F_GETPIPE_SZ) };
        assert_eq!(size, 1 << 20);
        close(r);
        let err = write(w, b"x").expect_err("no reader");
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        close(w);
    }

    #[test]
    fn shutdown_write_gives_the_peer_eof() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        shutdown_write(a.as_raw_fd()).expect("shutdown");
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).expect("read"), 0);
    }
}
