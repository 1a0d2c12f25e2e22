//! A transport's write buffer: a queue of chunks written out with one gathering system call.
//!
//! Chunks are whatever the transport keeps alive (Python `bytes` objects, so nothing is copied
//! on the way to the kernel); the queue only needs to see their bytes. A partial write leaves
//! an offset into the first chunk. Pure Rust: no Python types here.

use std::collections::VecDeque;
use std::io::IoSlice;

/// Most slices handed to one `writev`/`sendmsg` (Linux's `IOV_MAX` is 1024).
pub const MAX_IOV: usize = 512;

/// Pending output, oldest first.
pub struct WriteQueue<C> {
    /// Chunks not yet fully written, each with the number of its bytes already written
    /// (always less than its length).
    chunks: VecDeque<(C, usize)>,
    /// Bytes still to write, over all chunks.
    len: usize,
}

impl<C: AsRef<[u8]>> Default for WriteQueue<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: AsRef<[u8]>> WriteQueue<C> {
    /// An empty queue.
    pub fn new() -> Self {
        WriteQueue {
            chunks: VecDeque::new(),
            len: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a chunk; empty chunks are dropped.
    pub fn push(&mut self, chunk: C) {
        self.push_rest(chunk, 0);
    }

    /// Appends a chunk of which the first `skip` bytes were already written.
    pub fn push_rest(&mut self, chunk: C, skip: usize) {
        let n = chunk.as_ref().len();
        if skip < n {
            self.len += n - skip;
            self.chunks.push_back((chunk, skip));
        }
    }

    /// The pending bytes as slices for a gathering write, at most `MAX_IOV` of them.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.chunks
            .iter()
            .take(MAX_IOV)
            .map(|(chunk, start)| IoSlice::new(&chunk.as_ref()[*start..]))
            .collect()
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some((chunk, start)) = self.chunks.front_mut() else {
                break;
            };
            let left = chunk.as_ref().len() - *start;
            if n < left {
                *start += n;
                return;
            }
            n -= left;
            self.chunks.pop_front();
        }
    }

    /// Drops everything (abort), returning the chunks so the caller decides where they are
    /// released.
    pub fn clear(&mut self) -> Vec<C> {
        self.len = 0;
        self.chunks.drain(..).map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(q: &WriteQueue<Vec<u8>>) -> Vec<u8> {
        q.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn empty_chunks_are_ignored() {
        let mut q = WriteQueue::new();
        q.push(Vec::new());
        assert!(q.is_empty());
        assert!(q.slices().is_empty());
    }

    #[test]
    fn consume_across_chunks_keeps_order() {
        let mut q = WriteQueue::new();
        q.push(b"hello".to_vec());
        q.push(b" ".to_vec());
        q.push(b"world".to_vec());
        assert_eq!(q.len(), 11);
        q.consume(3);
        assert_eq!(gather(&q), b"lo world");
        q.consume(3);
        assert_eq!(gather(&q), b"world");
        assert_eq!(q.len(), 5);
        q.consume(5);
        assert!(q.is_empty());
        assert!(q.slices().is_empty());
    }

    #[test]
    fn push_rest_skips_what_was_sent() {
        let mut q = WriteQueue::new();
        q.push_rest(b"abcdef".to_vec(), 4);
        assert_eq!(q.len(), 2);
        q.push(b"gh".to_vec());
        assert_eq!(gather(&q), b"efgh");
        q.push_rest(b"xyz".to_vec(), 3);
        assert_eq!(q.len(), 4);
        q.push_rest(b"xyz".to_vec(), 1);
        assert_eq!(gather(&q), b"efghyz");
    }

    #[test]
    fn slices_are_capped() {
        let mut q = WriteQueue::new();
        for _ in 0..MAX_IOV + 10 {
            q.push(vec![1u8]);
        }
        assert_eq!(q.slices().len(), MAX_IOV);
        assert_eq!(q.len(), MAX_IOV + 10);
    }

    #[test]
    fn clear_returns_the_chunks() {
        let mut q = WriteQueue::new();
        q.push(b"ab".to_vec());
        q.consume(1);
        q.push(b"cd".to_vec());
        assert_eq!(q.clear().len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}
