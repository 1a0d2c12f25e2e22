//! The system calls of the native transports, each returning `io::Result` and retrying on
//! `EINTR`. Pure Rust: no Python types here.

use std::io::{self, IoSlice};
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

/// `recv(fd, buf)`: the number of bytes read, 0 at end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    syscall!(libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)).map(|n| n as usize)
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

/// `shutdown(fd, SHUT_WR)`: the peer sees end of stream; reading goes on.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(libc::shutdown(fd, libc::SHUT_WR)).map(drop)
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
    fn shutdown_write_gives_the_peer_eof() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        shutdown_write(a.as_raw_fd()).expect("shutdown");
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).expect("read"), 0);
    }
}
