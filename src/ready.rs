//! The ready queue: callbacks to run, in order, each with when it became due (a
//! [`crate::stats::clock`] reading, 0 when not known), so the loop can tell how late it ran.

use std::collections::VecDeque;

/// A FIFO of callbacks with their due times.
pub struct ReadyQueue<T> {
    items: VecDeque<(T, u64)>,
    /// The due time given to what is queued with [`ReadyQueue::push_back`]: the start of the
    /// running callback, or the end of the last wait (0 while the loop keeps no statistics or
    /// is not running).
    pub now: u64,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        ReadyQueue {
            items: VecDeque::new(),
            now: 0,
        }
    }
}

impl<T> ReadyQueue<T> {
    /// Queues `item`, due now.
    #[inline]
    pub fn push_back(&mut self, item: T) {
        self.items.push_back((item, self.now));
    }

    /// Queues `item`, due at `due`.
    #[inline]
    pub fn push_due(&mut self, item: T, due: u64) {
        self.items.push_back((item, due));
    }

    /// The next item and when it was due.
    #[inline]
    pub fn pop_front(&mut self) -> Option<(T, u64)> {
        self.items.pop_front()
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The queued items, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(item, _)| item)
    }

    /// Takes every item out, in order.
    pub fn take_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
            .into_iter()
            .map(|(item, _)| item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_order_and_due_times() {
        let mut q = ReadyQueue::default();
        q.push_back('a');
        q.now = 7;
        q.push_back('b');
        q.push_due('c', 3);
        assert_eq!(q.len(), 3);
        assert_eq!(q.iter().collect::<String>(), "abc");
        assert_eq!(q.pop_front(), Some(('a', 0)));
        assert_eq!(q.pop_front(), Some(('b', 7)));
        assert_eq!(q.take_all(), vec!['c']);
        assert!(q.is_empty());
    }
}
