//! The timer heap: deadlines ordered by `(when, sequence)`, with O(1) cancellation.
//!
//! asyncio fires timers with equal deadlines in the order they were scheduled, so every
//! entry carries a monotonically increasing sequence number as a tie-breaker. Cancelling a
//! timer drops its payload at once and leaves a 24-byte tombstone in the heap; tombstones are
//! swept out whenever they outnumber the live timers, so a program that schedules and cancels
//! millions of timers keeps a heap proportional to the timers that are really pending.
//!
//! This module is pure Rust: it knows nothing of Python and is unit-tested with `cargo test`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;

/// Tombstones are only swept once there are at least this many, so a heap of a few timers
/// is never rebuilt on every cancellation.
const MIN_TOMBSTONES_TO_SWEEP: usize = 64;

/// Identifies one scheduled timer; stale ids (fired or cancelled timers) are harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    /// Index into the slot table.
    slot: u32,
    /// Sequence number of the timer, which tells a reused slot from the one this id named.
    /// Never zero, so that `Option<TimerId>` takes no more room than a `TimerId`.
    seq: NonZeroU64,
}

/// A heap entry. Ordering is reversed so that `BinaryHeap` (a max-heap) pops the earliest.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Deadline; NaN is stored as negative infinity so that the order stays total.
    when: f64,
    /// Scheduling order, the tie-breaker between equal deadlines.
    seq: u64,
    /// Slot holding the payload while the timer is live.
    slot: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A payload slot; `seq` is the sequence number of the timer that owns (or last owned) it.
struct Slot<T> {
    /// Sequence number of the owning timer.
    seq: u64,
    /// The payload while the timer is live; `None` once it fired or was cancelled.
    payload: Option<T>,
}

/// Min-heap of timers carrying payloads of type `T`.
pub struct TimerHeap<T> {
    /// Entries, live and tombstoned; an entry is live iff its slot still holds its `seq`
    /// with a payload.
    heap: BinaryHeap<Entry>,
    /// Payload storage indexed by `Entry::slot`.
    slots: Vec<Slot<T>>,
    /// Slots free for reuse.
    free: Vec<u32>,
    /// Next sequence number to hand out (starting at 1).
    next_seq: u64,
    /// Number of live timers (entries whose payload is present).
    live: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_seq: 1,
            live: 0,
        }
    }

    /// Number of live (not yet fired, not cancelled) timers.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no live timer remains.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of entries physically in the heap, tombstones included.
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Schedules `payload` at `when` and returns its id.
    pub fn push(&mut self, when: f64, payload: T) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Slot {
                    seq,
                    payload: Some(payload),
                };
                slot
            }
            None => {
                self.slots.push(Slot {
                    seq,
                    payload: Some(payload),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let when = if when.is_nan() {
            f64::NEG_INFINITY
        } else {
            when
        };
        self.heap.push(Entry { when, seq, slot });
        self.live += 1;
        TimerId {
            slot,
            seq: NonZeroU64::MIN.saturating_add(seq - 1),
        }
    }

    /// Cancels the timer `id`, returning its payload if it was still pending.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.seq != id.seq.get() {
            return None;
        }
        let payload = slot.payload.take()?;
        self.live -= 1;
        self.sweep_if_worthwhile();
        Some(payload)
    }

    /// Deadline of the earliest live timer.
    pub fn next_deadline(&mut self) -> Option<f64> {
        self.drop_dead_top();
        self.heap.peek().map(|e| e.when)
    }

    /// Removes and returns the earliest live timer if its deadline is `<= now`.
    pub fn pop_due(&mut self, now: f64) -> Option<T> {
        self.pop_due_with_deadline(now).map(|(_, payload)| payload)
    }

    /// [`TimerHeap::pop_due`], with the timer's deadline.
    pub fn pop_due_with_deadline(&mut self, now: f64) -> Option<(f64, T)> {
        self.drop_dead_top();
        let top = self.heap.peek()?;
        if top.when > now {
            return None;
        }
        let entry = self.heap.pop()?;
        let when = entry.when;
        let payload = self.take_slot(entry);
        debug_assert!(
            payload.is_some(),
            "drop_dead_top leaves a live entry on top"
        );
        payload.map(|p| (when, p))
    }

    /// The live payloads, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.payload.as_ref())
    }

    /// Removes every timer, returning the live payloads in no particular order.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.clear();
        self.free.clear();
        self.live = 0;
        self.slots.drain(..).filter_map(|s| s.payload).collect()
    }

    fn is_live(&self, entry: &Entry) -> bool {
        let slot = &self.slots[entry.slot as usize];
        slot.seq == entry.seq && slot.payload.is_some()
    }

    fn take_slot(&mut self, entry: Entry) -> Option<T> {
        let slot = &mut self.slots[entry.slot as usize];
        if slot.seq != entry.seq {
            return None;
        }
        // The slot is only recycled once its heap entry is gone, so a tombstone can never
        // be confused with a later timer that reuses the slot.
        self.free.push(entry.slot);
        let payload = slot.payload.take();
        if payload.is_some() {
            self.live -= 1;
        }
        payload
    }

    fn drop_dead_top(&mut self) {
        while let Some(top) = self.heap.peek() {
            if self.is_live(top) {
                return;
            }
            if let Some(entry) = self.heap.pop() {
                self.take_slot(entry);
            }
        }
    }

    fn sweep_if_worthwhile(&mut self) {
        let tombstones = self.heap.len() - self.live;
        if tombstones < MIN_TOMBSTONES_TO_SWEEP || tombstones <= self.live {
            return;
        }
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|e| {
            let slot = &self.slots[e.slot as usize];
            let live = slot.seq == e.seq && slot.payload.is_some();
            if !live && slot.seq == e.seq {
                self.free.push(e.slot);
            }
            live
        });
        self.heap = BinaryHeap::from(entries);
        if self.slots.len() > 2 * MIN_TOMBSTONES_TO_SWEEP && self.live < self.slots.len() / 4 {
            self.shrink_slots();
        }
    }

    /// Trims trailing free slots so memory returns after a burst of timers.
    fn shrink_slots(&mut self) {
        let mut used = vec![false; self.slots.len()];
        for e in self.heap.iter() {
            used[e.slot as usize] = true;
        }
        while let Some(false) = used.last() {
            used.pop();
            self.slots.pop();
        }
        self.slots
            .shrink_to(self.slots.len().max(MIN_TOMBSTONES_TO_SWEEP));
        let len = self.slots.len() as u32;
        self.free.retain(|&s| s < len);
        self.free.sort_unstable();
        self.free.dedup();
        self.free.shrink_to_fit();
        self.heap.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_due(h: &mut TimerHeap<u32>, now: f64) -> Vec<u32> {
        std::iter::from_fn(|| h.pop_due(now)).collect()
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut h = TimerHeap::new();
        h.push(3.0, 3);
        h.push(1.0, 1);
        h.push(2.0, 2);
        assert_eq!(drain_due(&mut h, 10.0), vec![1, 2, 3]);
        assert!(h.is_empty());
    }

    #[test]
    fn equal_deadlines_fire_in_scheduling_order() {
        let mut h = TimerHeap::new();
        for i in 0..100 {
            h.push(5.0, i);
        }
        assert_eq!(drain_due(&mut h, 5.0), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let mut h = TimerHeap::new();
        h.push(1.0, 1);
        assert_eq!(h.pop_due(0.999_999), None);
        assert_eq!(h.pop_due_with_deadline(1.0), Some((1.0, 1)));
    }

    #[test]
    fn nan_deadline_is_due_at_once() {
        let mut h = TimerHeap::new();
        h.push(1.0, 1);
        h.push(f64::NAN, 2);
        assert_eq!(h.next_deadline(), Some(f64::NEG_INFINITY));
        assert_eq!(drain_due(&mut h, 0.0), vec![2]);
    }

    #[test]
    fn cancel_returns_payload_once() {
        let mut h = TimerHeap::new();
        let a = h.push(1.0, 1);
        h.push(2.0, 2);
        assert_eq!(h.cancel(a), Some(1));
        assert_eq!(h.cancel(a), None);
        assert_eq!(h.len(), 1);
        assert_eq!(h.next_deadline(), Some(2.0));
        assert_eq!(drain_due(&mut h, 10.0), vec![2]);
    }

    #[test]
    fn stale_id_does_not_cancel_a_reused_slot() {
        let mut h = TimerHeap::new();
        let a = h.push(1.0, 1);
        assert_eq!(h.pop_due(1.0), Some(1));
        let b = h.push(2.0, 2);
        assert_eq!(a.slot, b.slot);
        assert_eq!(h.cancel(a), None);
        assert_eq!(h.cancel(b), Some(2));
    }

    #[test]
    fn cancelled_timers_do_not_accumulate() {
        let mut h = TimerHeap::new();
        for i in 0..1_000_000 {
            let id = h.push(3600.0 + f64::from(i), i);
            h.cancel(id);
        }
        assert!(h.heap_len() <= MIN_TOMBSTONES_TO_SWEEP, "{}", h.heap_len());
        assert!(
            h.slots.len() <= 4 * MIN_TOMBSTONES_TO_SWEEP,
            "{}",
            h.slots.len()
        );
    }

    #[test]
    fn tombstones_bounded_by_live_timers() {
        let mut h = TimerHeap::new();
        let ids: Vec<_> = (0..10_000).map(|i| h.push(f64::from(i), i)).collect();
        for id in ids.iter().skip(1).step_by(2) {
            h.cancel(*id);
        }
        assert_eq!(h.len(), 5_000);
        assert!(h.heap_len() <= 2 * h.len() + MIN_TOMBSTONES_TO_SWEEP);
        let fired = drain_due(&mut h, f64::INFINITY);
        assert_eq!(fired, (0..10_000).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn drain_returns_live_payloads() {
        let mut h = TimerHeap::new();
        let a = h.push(1.0, 1);
        h.push(2.0, 2);
        h.cancel(a);
        assert_eq!(h.drain(), vec![2]);
        assert!(h.is_empty());
        assert_eq!(h.next_deadline(), None);
    }
}

/// The clock of `time.monotonic()` (`CLOCK_MONOTONIC`), in seconds, computed the way the
/// interpreter does (integer nanoseconds, then one division) so both give the same float.
pub fn monotonic() -> f64 {
    let ns = crate::stats::clock::monotonic_nanos();
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000) as f64
    } else {
        ns as f64 / 1e9
    }
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn monotonic_never_goes_back() {
        let mut last = super::monotonic();
        for _ in 0..10_000 {
            let now = super::monotonic();
            assert!(now >= last);
            last = now;
        }
    }
}
