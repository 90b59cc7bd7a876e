//! The boot time that every process start time of this program is counted from (Linux), so that
//! a step of the wall clock does not change a process's identity.
//!
//! Linux keeps a process's start as clock ticks since boot (`/proc/PID/stat`, field 22);
//! sysinfo turns that into epoch seconds by adding the boot time (`btime` of `/proc/stat`), which
//! it reads once, when a `sysinfo::System` is made. The kernel computes `btime` as the wall clock
//! now minus the time since boot, so `btime` moves by as much as the wall clock is stepped (an
//! NTP or chrony step, `date -s`; not a suspend, which both clocks count). Two `System`s made
//! on either side of a step would give every process two start times an hour apart, and an
//! identity recorded before the step would name no process after it.
//!
//! So each [`super::Sys`] records the `btime` its `System` counted from (read just before and
//! just after it was made, again if the two differ), and every start time is moved from that
//! boot time to one [`frame`]: `start = frame + whole seconds since boot`, exact, whatever
//! the wall clock did ([`corrected`]). The frame is the kernel's `btime` when this process
//! first reads a start time.
//!
//! macOS and Windows need none of this: sysinfo reads a start time the kernel fixed when the
//! process was made (macOS `proc_bsdinfo.pbi_start_tvsec`, the `p_start` timeval taken at
//! fork; Windows the creation `FILETIME` of `GetProcessTimes`), which a later step does not move.
//! There [`frame`] is `None` and start times pass through unchanged.
//!
//! Not covered: a step while this program is not running (the next run has another frame),
//! start times written by others in their own wall clock (the registry's `started_at` that
//! Serena writes), and the absolute epoch times shown to the user are in the frame, which is off
//! the wall clock by any step since the frame was settled.

use std::sync::OnceLock;

/// The frame once it is settled: `None` where start times need no correction.
static FRAME: OnceLock<Option<u64>> = OnceLock::new();

/// The boot time every start time of this process is counted from (epoch seconds): the
/// kernel's `btime` when it was first asked for. `None` off Linux
/// (and where `/proc/stat` has no `btime`).
pub fn frame() -> Option<u64> {
    *FRAME.get_or_init(btime)
}

/// A start time that sysinfo counted from the boot time `counted_from`, counted from `frame`
/// instead: the same whole seconds since boot.
pub fn corrected(start: u64, counted_from: u64, frame: u64) -> u64 {
    start.saturating_sub(counted_from).saturating_add(frame)
}

/// The kernel's boot time now, epoch seconds (the `btime` line of `/proc/stat`); `None` off
/// Linux.
pub fn btime() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        parse_btime(&text)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The `btime` of a `/proc/stat` text.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_time_is_moved_to_the_frame_by_what_the_boot_time_moved() {
        // A process started 500 s after a boot at 10_000 (the frame). The wall clock is
        // then stepped back an hour: the kernel's btime reads 6_400, and a System made now
        // says 6_900. Moved to the frame it is 10_500 again, and so for a step forward.
        assert_eq!(corrected(6_900, 6_400, 10_000), 10_500);
        assert_eq!(corrected(14_100, 13_600, 10_000), 10_500);
        assert_eq!(corrected(10_500, 10_000, 10_000), 10_500, "no step");
        // A start sysinfo could not read (0 since boot) is the frame itself, never negative.
        assert_eq!(corrected(0, 6_400, 10_000), 10_000);
    }

    #[test]
    fn btime_is_read_from_the_stat_text() {
        let stat = "cpu  1 2 3\nintr 5 6\nctxt 7\nbtime 1765000000\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_765_000_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
        if cfg!(target_os = "linux") {
            assert!(btime().is_some_and(|b| b > 0), "this kernel has one");
            assert!(frame().is_some());
        }
    }
}
