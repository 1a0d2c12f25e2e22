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
    /// The oldest chunk not yet fully written, with the number of its bytes already written
    /// (always less than its length). Kept apart from the others: a connection whose output
    /// never waits behind more than one chunk never allocates.
    head: Option<(C, usize)>,
    /// The chunks after it, none of them written yet.
    rest: VecDeque<C>,
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
            head: None,
            rest: VecDeque::new(),
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

    /// Appends a chunk of which the first `skip` bytes were already written (only ever the
    /// first chunk of a queue: bytes go out in order).
    pub fn push_rest(&mut self, chunk: C, skip: usize) {
        let n = chunk.as_ref().len();
        if skip >= n {
            return;
        }
        self.len += n - skip;
        if self.head.is_none() {
            self.head = Some((chunk, skip));
        } else {
            debug_assert_eq!(skip, 0, "only the first chunk can be partly written");
            self.rest.push_back(chunk);
        }
    }

    /// The pending bytes, when they are all in one chunk: a plain write carries them.
    pub fn single(&self) -> Option<&[u8]> {
        match &self.head {
            Some((chunk, start)) if self.rest.is_empty() => Some(&chunk.as_ref()[*start..]),
            _ => None,
        }
    }

    /// The pending bytes as slices for a gathering write, at most `MAX_IOV` of them.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let head = self
            .head
            .iter()
            .map(|(chunk, start)| IoSlice::new(&chunk.as_ref()[*start..]));
        let rest = self.rest.iter().map(|chunk| IoSlice::new(chunk.as_ref()));
        head.chain(rest).take(MAX_IOV).collect()
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some((chunk, start)) = self.head.as_mut() else {
                break;
            };
            let left = chunk.as_ref().len() - *start;
            if n < left {
                *start += n;
                return;
            }
            n -= left;
            self.head = self.rest.pop_front().map(|c| (c, 0));
        }
    }

    /// Drops everything (abort), returning the chunks so the caller decides where they are
    /// released.
    pub fn clear(&mut self) -> Vec<C> {
        self.len = 0;
        let head = self.head.take().map(|(c, _)| c);
        head.into_iter().chain(self.rest.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(q: &WriteQueue<Vec<u8>>) -> Vec<u8> {
        q.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn single_is_the_one_chunk_left_past_what_was_written() {
        let mut q = WriteQueue::new();
        assert_eq!(q.single(), None);
        q.push(b"hello".to_vec());
        assert_eq!(q.single(), Some(&b"hello"[..]));
        q.push(b"world".to_vec());
        assert_eq!(q.single(), None);
        q.consume(7);
        assert_eq!(q.single(), Some(&b"rld"[..]));
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
        let mut sent = WriteQueue::new();
        sent.push_rest(b"xyz".to_vec(), 3);
        assert!(sent.is_empty());
        assert_eq!(sent.single(), None);
    }

    #[test]
    fn one_chunk_at_a_time_never_allocates_the_rest() {
        let mut q = WriteQueue::new();
        for round in 0..3 {
            q.push(vec![round; 10]);
            q.consume(4);
            assert_eq!(q.single(), Some(&[round; 6][..]));
            q.consume(6);
            assert!(q.is_empty());
        }
        assert_eq!(q.rest.capacity(), 0);
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
