//! The signal wake-up socket.
//!
//! Signals reach the loop the way they reach asyncio's: the interpreter's C-level handler writes
//! the signal number as one byte to the fd given to `signal.set_wakeup_fd`, and the loop reads
//! those bytes and schedules the handlers registered with `add_signal_handler`. The socket pair
//! lives as long as the loop, so a signal that arrives while the loop is not running waits in the
//! socket and is delivered when the loop next runs.
//!
//! Pure Rust: the byte stream is decoded here; dispatch to Python handlers is the loop's job.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Both ends of the wake-up socket pair.
pub struct SignalSocket {
    /// The end the loop polls and reads signal numbers from.
    read: UnixStream,
    /// The end handed to `signal.set_wakeup_fd`.
    write: UnixStream,
}

impl SignalSocket {
    /// A non-blocking, close-on-exec socket pair.
    pub fn new() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(SignalSocket { read, write })
    }

    /// The fd to poll for readability.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The fd for `signal.set_wakeup_fd`.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Reads every pending signal number (the poller is edge-triggered, so all of them).
    /// Zero bytes, which carry no signal, are skipped.
    pub fn drain(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut buf = [0u8; 256];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend(buf[..n].iter().copied().filter(|&b| b != 0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn drains_signal_numbers_and_skips_zero_bytes() {
        let mut s = SignalSocket::new().expect("socket pair");
        (&s.write).write_all(&[2, 0, 15]).expect("write");
        let mut got = Vec::new();
        s.drain(&mut got).expect("drain");
        assert_eq!(got, vec![2, 15]);
        got.clear();
        s.drain(&mut got).expect("drain empty");
        assert!(got.is_empty());
    }
}
