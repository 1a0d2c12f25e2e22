//! What the loop counts about itself, always on: iterations, callbacks, events, time waiting in
//! the poller and running callbacks, how late callbacks ran (a histogram) and the slowest ones.
//!
//! Pure Rust, in [`clock`] ticks; converted to seconds only when a snapshot is taken. The loop
//! reads the clock once after each wait and once after each callback, and nothing else here
//! reads it: each reading ends one span and starts the next.

pub mod clock;

/// Exact counts below this many ticks; above it, eight buckets per power of two.
const LINEAR: u64 = 16;
const SUB_BITS: u32 = 3;
const BUCKETS: usize = LINEAR as usize + (64 - 4) * (1 << SUB_BITS);

/// Counts of durations in log-linear buckets: each bucket above the first sixteen spans an
/// eighth of a power of two, so a percentile read from it is within 12.5% of the true value.
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + ((exp - 4) << SUB_BITS) as usize + sub as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k >> SUB_BITS) as u32 + 4;
    let sub = (k & ((1 << SUB_BITS) - 1)) as u64;
    let low = (1u64 << exp) + (sub << (exp - SUB_BITS));
    low + ((1u64 << (exp - SUB_BITS)) - 1)
}

impl Histogram {
    /// Counts one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// The sum of the values counted.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted (0 when none was).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` of the counted values lie: the upper bound of the
    /// bucket it falls in, never more than the maximum seen. 0 when nothing was counted.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i).min(self.max);
            }
        }
        self.max
    }

    /// The non-empty buckets, as (largest value in the bucket, count), in increasing order.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (bucket_upper(i), c))
            .collect()
    }
}

/// The `N` longest callbacks seen, with what the loop said about each.
pub struct Slowest<T> {
    capacity: usize,
    /// Sorted by duration, longest first.
    entries: Vec<(u64, T)>,
}

impl<T> Slowest<T> {
    /// Keeps the `capacity` longest.
    pub fn new(capacity: usize) -> Self {
        Slowest {
            capacity,
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Whether a callback that took `ticks` would be kept: the one test made per callback, so
    /// that only the few that are kept are described.
    #[inline]
    pub fn admits(&self, ticks: u64) -> bool {
        self.capacity > 0
            && (self.entries.len() < self.capacity
                || self.entries.last().is_some_and(|(d, _)| ticks > *d))
    }

    /// Keeps `what`, which took `ticks`, dropping the shortest kept if there is no room.
    pub fn insert(&mut self, ticks: u64, what: T) {
        if !self.admits(ticks) {
            return;
        }
        let at = self.entries.partition_point(|(d, _)| *d >= ticks);
        self.entries.insert(at, (ticks, what));
        self.entries.truncate(self.capacity);
    }

    /// The kept callbacks, longest first.
    pub fn entries(&self) -> &[(u64, T)] {
        &self.entries
    }
}

/// Seconds under which callbacks are timed in spans of several (see [`Stats::ran`]).
pub const CHEAP_CALLBACK: f64 = 1e-6;
/// The most callbacks a span holds.
pub const MAX_SPAN: u32 = 64;

/// How many slowest callbacks a loop keeps.
pub const SLOWEST_KEPT: usize = 10;

/// The loop's counters, in [`clock`] ticks.
pub struct Stats<T> {
    /// Counting at all; when off, the loop reads no clock for the statistics.
    pub enabled: bool,
    /// When the loop was made.
    pub created: u64,
    /// Iterations of the loop.
    pub iterations: u64,
    /// Callbacks run (cancelled ones are skipped, not counted).
    pub callbacks: u64,
    /// Readiness reports the poller returned.
    pub io_events: u64,
    /// Timers whose deadline came and that were queued to run.
    pub timers_fired: u64,
    /// Time in the poller, from the end of one iteration's callbacks to the end of the next
    /// wait: what the loop spends idle, plus the wait's own system call.
    pub poll_ticks: u64,
    /// Time running callbacks, each with the sending of what it wrote.
    pub callback_ticks: u64,
    /// How late callbacks ran: from when each was due (queued, or its timer's deadline) to
    /// when it started.
    pub lag: Histogram,
    /// The longest callbacks.
    pub slowest: Slowest<T>,
    /// The reading that ended the last span; the next span starts here.
    pub mark: u64,
    /// Ticks per second, as last measured (0 until first needed).
    rate: f64,
    /// Since when the loop marks each task step's end on its task (0: not asked to yet).
    pub watching_tasks: u64,
    /// Callbacks per span (see [`Stats::ran`]), and how many the open span holds so far.
    span: u32,
    open: u32,
}

impl<T> Stats<T> {
    /// Counters for a loop made now.
    pub fn new(enabled: bool) -> Self {
        let now = clock::now();
        Stats {
            enabled,
            created: now,
            iterations: 0,
            callbacks: 0,
            io_events: 0,
            timers_fired: 0,
            poll_ticks: 0,
            callback_ticks: 0,
            lag: Histogram::default(),
            slowest: Slowest::new(SLOWEST_KEPT),
            mark: now,
            rate: 0.0,
            watching_tasks: 0,
            span: 1,
            open: 0,
        }
    }

    /// Ticks per second: measured the first time, then again at each `refresh`.
    pub fn rate(&mut self) -> f64 {
        if self.rate == 0.0 {
            self.rate = clock::ticks_per_second();
        }
        self.rate
    }

    /// Measures the tick rate again, over the longer time passed since the last measure.
    pub fn refresh_rate(&mut self) -> f64 {
        self.rate = clock::ticks_per_second();
        self.rate
    }

    /// The reading `seconds` before `at`.
    pub fn before(&mut self, at: u64, seconds: f64) -> u64 {
        let back = (seconds.max(0.0) * self.rate()) as u64;
        at.saturating_sub(back).max(1)
    }

    /// The poller returned `events` reports; `waited`: it was allowed to block, and the time
    /// since the last reading is counted as waiting. Returns the reading, which is when what
    /// it reported became due. A wait that could not block is not timed: its system call
    /// counts with the callbacks that follow it, which spares a clock reading per iteration.
    #[inline]
    pub fn polled(&mut self, events: usize, waited: bool) -> u64 {
        self.iterations += 1;
        self.io_events += events as u64;
        if waited {
            let now = clock::now();
            self.poll_ticks += now.saturating_sub(self.mark);
            self.mark = now;
        }
        self.mark
    }

    /// A callback due at `due` (0: not known) ended. Returns the span it closed, if it closed
    /// one: how long the span took and how many callbacks it held (1: this one alone).
    ///
    /// Callbacks are timed one by one unless they come in a flood of tiny ones, for which a
    /// clock reading each would cost more than the statistics may: while the callbacks of a
    /// span take under [`CHEAP_CALLBACK`] each on average, the next span holds twice as many,
    /// up to [`MAX_SPAN`]; a span that is not that cheap brings the loop back to one callback
    /// per span. A callback's lag is measured from the start of its span.
    #[inline]
    pub fn ran(&mut self, due: u64) -> Option<(u64, u32)> {
        self.callbacks += 1;
        if due != 0 {
            self.lag.record(self.mark.saturating_sub(due));
        }
        self.open += 1;
        if self.open < self.span {
            return None;
        }
        Some(self.close_span())
    }

    /// Callbacks ran since the last reading that no span has counted yet.
    pub fn span_open(&self) -> bool {
        self.open > 0
    }

    /// The loop is about to wait: the open span ends, and the next batch is timed callback by
    /// callback again. Spans grow only through a flood that keeps the loop from waiting, so
    /// the callbacks of a loop that waits between batches are each timed.
    pub fn before_wait(&mut self) {
        if self.open > 0 {
            self.close_span();
        }
        self.span = 1;
    }

    /// Ends the open span now (the end of a batch of callbacks).
    pub fn close_span(&mut self) -> (u64, u32) {
        let now = clock::now();
        let took = now.saturating_sub(self.mark);
        let count = self.open;
        self.open = 0;
        self.callback_ticks += took;
        self.mark = now;
        let cheap = (self.rate() * CHEAP_CALLBACK) as u64 * u64::from(count);
        self.span = if took < cheap {
            (self.span * 2).min(MAX_SPAN)
        } else {
            1
        };
        (took, count)
    }

    /// Time passed without either (a cancelled handle skipped, the loop stopped and started
    /// again) counts for neither.
    pub fn skip(&mut self) {
        self.mark = clock::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for i in 1..BUCKETS {
            let upper = bucket_upper(i);
            assert!(upper > last, "bucket {i}");
            assert_eq!(bucket(upper), i);
            assert_eq!(bucket(last + 1), i);
            last = upper;
        }
        assert_eq!(last, u64::MAX);
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.sum(), 1000 * 10_000 * 10_001 / 2);
        for (q, want) in [(0.5, 5_000_000.0), (0.99, 9_900_000.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= want && got <= want * 1.125, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
        let total: u64 = h.buckets().iter().map(|(_, c)| c).sum();
        assert_eq!(total, 10_000);
    }

    #[test]
    fn one_value_is_every_quantile() {
        let mut h = Histogram::default();
        h.record(7);
        assert_eq!((h.quantile(0.01), h.quantile(0.99)), (7, 7));
        h.record(1_000_003);
        assert_eq!(h.quantile(1.0), 1_000_003);
    }

    #[test]
    fn slowest_keeps_the_longest_longest_first() {
        let mut s = Slowest::new(3);
        for (d, name) in [(5, "e"), (1, "a"), (9, "i"), (3, "c"), (7, "g"), (2, "b")] {
            if s.admits(d) {
                s.insert(d, name);
            }
        }
        let kept: Vec<_> = s.entries().iter().map(|(d, n)| (*d, *n)).collect();
        assert_eq!(kept, vec![(9, "i"), (7, "g"), (5, "e")]);
        assert!(!s.admits(5), "a tie with the shortest kept is not admitted");
        assert!(s.admits(6));
        assert!(!Slowest::<()>::new(0).admits(u64::MAX));
    }

    #[test]
    fn spans_split_time_between_the_poller_and_callbacks() {
        let mut st: Stats<()> = Stats::new(true);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let due = st.polled(2, true);
        std::thread::sleep(std::time::Duration::from_millis(10));
        let (took, count) = st.ran(due).expect("one callback per span at first");
        assert_eq!(count, 1);
        assert_eq!(st.ran(0).map(|(_, n)| n), Some(1));
        assert_eq!((st.iterations, st.io_events, st.callbacks), (1, 2, 2));
        let rate = clock::ticks_per_second();
        let secs = |t: u64| t as f64 / rate;
        assert!(secs(st.poll_ticks) >= 0.019, "{}", secs(st.poll_ticks));
        assert!(secs(took) >= 0.009 && secs(st.callback_ticks) >= secs(took));
        // The first callback started at once; the lag of one due when it started is ~0.
        assert_eq!(st.lag.count(), 1);
        assert!(secs(st.lag.max()) < 0.005);
        // A wait that could not block is not timed.
        let before = st.poll_ticks;
        std::thread::sleep(std::time::Duration::from_millis(2));
        st.polled(0, false);
        assert_eq!(st.poll_ticks, before);
    }

    #[test]
    fn floods_of_tiny_callbacks_are_timed_in_spans_and_a_slow_one_ends_them() {
        let mut st: Stats<()> = Stats::new(true);
        st.polled(0, true);
        let mut spans = Vec::new();
        for _ in 0..1000 {
            if let Some((_, n)) = st.ran(0) {
                spans.push(n);
            }
        }
        // A machine's hiccup may hold a span back; from one span of one, each doubles.
        let first = spans.iter().rposition(|&n| n == 1).expect("spans of one");
        assert_eq!(
            &spans[first..first + 7],
            &[1, 2, 4, 8, 16, 32, 64],
            "{spans:?}"
        );
        assert!(
            spans[first + 7..].iter().all(|&n| n == MAX_SPAN),
            "{spans:?}"
        );
        // Whatever a span holds is counted once, when it closes.
        if st.span_open() {
            st.close_span();
        }
        assert_eq!(st.callbacks, 1000);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let closed = std::iter::repeat_with(|| st.ran(0)).find_map(|x| x);
        assert!(closed.is_some_and(|(_, n)| n > 1));
        assert_eq!(
            st.ran(0).map(|(_, n)| n),
            Some(1),
            "a slow span ends the spans"
        );
    }
}
