//! The clock the loop's statistics are read from, once per callback: the CPU's time-stamp
//! counter where the kernel itself keeps time with it, else `CLOCK_MONOTONIC`.
//!
//! A callback can cost a quarter of a microsecond, so one more `clock_gettime` per callback
//! (about 23 ns here) would cost several percent; `rdtsc` costs under 9 ns and is not ordered
//! against the work around it. Ticks are converted to seconds only when a snapshot is taken,
//! against `CLOCK_MONOTONIC` over the whole time since the process first read the clock.

use std::sync::OnceLock;

/// Where ticks come from, chosen once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The time-stamp counter: invariant, and the kernel's own clocksource.
    Tsc,
    /// `CLOCK_MONOTONIC` in nanoseconds.
    Monotonic,
}

struct Origin {
    source: Source,
    ticks: u64,
    nanos: u64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| {
        let source = if tsc_is_trusted() {
            Source::Tsc
        } else {
            Source::Monotonic
        };
        Origin {
            source,
            ticks: read(source),
            nanos: monotonic_nanos(),
        }
    })
}

/// The source ticks come from in this process.
pub fn source() -> Source {
    origin().source
}

/// Now, in ticks of [`source`].
#[inline]
pub fn now() -> u64 {
    read(origin().source)
}

#[inline]
fn read(source: Source) -> u64 {
    match source {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `rdtsc` has no preconditions; `tsc_is_trusted` saw the CPU has it.
        Source::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
        #[cfg(not(target_arch = "x86_64"))]
        Source::Tsc => monotonic_nanos(),
        Source::Monotonic => monotonic_nanos(),
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on the
    // platforms mio runs on, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Ticks per second, measured over the time since the process first read the clock (waiting
/// until 50 µs have passed, so that the first measure is not taken over nothing: the two
/// readings it compares are some 20 ns apart, an error of 0.04% at worst).
pub fn ticks_per_second() -> f64 {
    let o = origin();
    if o.source == Source::Monotonic {
        return 1e9;
    }
    loop {
        let (ticks, nanos) = (now(), monotonic_nanos());
        let elapsed = nanos.saturating_sub(o.nanos);
        if elapsed >= 50_000 {
            return ticks.saturating_sub(o.ticks) as f64 * 1e9 / elapsed as f64;
        }
        std::hint::spin_loop();
    }
}

/// The counter runs at one rate whatever the core's frequency or sleep state (the invariant
/// TSC of CPUID leaf 0x8000_0007), and the kernel keeps time with it: a kernel that found it
/// unsynchronised across cores, or a hypervisor that does not pass it through, switches to
/// another clocksource, and then so does this.
fn tsc_is_trusted() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0x8000_0000 reports the highest extended leaf: 0x8000_0007 is only asked for
        // where it exists.
        let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        let invariant =
            max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
        invariant
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_advance_at_the_measured_rate() {
        let rate = ticks_per_second();
        assert!(rate > 1e6, "{rate}");
        let (t0, n0) = (now(), monotonic_nanos());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, n1) = (now(), monotonic_nanos());
        let by_ticks = (t1 - t0) as f64 / rate;
        let by_clock = (n1 - n0) as f64 / 1e9;
        assert!(
            (by_ticks - by_clock).abs() < by_clock * 0.05,
            "{by_ticks} vs {by_clock}"
        );
    }
}
