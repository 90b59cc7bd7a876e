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
//! the wall clock did ([`corrected`]). The frame is settled once per process, and per boot
//! across restarts ([`settle`]): `$SERENA_HOME/tray/boot.json` records the boot
//! (`/proc/sys/kernel/random/boot_id`) and its frame, and a start in the same boot adopts that
//! frame, so the start times in `sessions.json`, the registry entries this program wrote and the
//! timeline still name the same processes after a step while it was not running. A new boot
//! (another `boot_id`) starts a new frame: no process of the old one runs any more.
//!
//! macOS and Windows need none of this: sysinfo reads a start time the kernel fixed when the
//! process was made (macOS `proc_bsdinfo.pbi_start_tvsec`, the `p_start` timeval taken at
//! fork; Windows the creation `FILETIME` of `GetProcessTimes`), which a later step does not move.
//! There [`frame`] is `None` and start times pass through unchanged.
//!
//! Not covered: start times written by others in their own wall clock, notably the registry's
//! `started_at` that Serena writes (its own `time.time()` at start): a step between that
//! Serena's start and the frame's moves one against the other (see [`wall_shift`] for how the
//! registry copes), and the absolute epoch times shown to the user are in the frame, which is
//! off the wall clock by any step since the frame was settled.

#[cfg(target_os = "linux")]
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The frame once it is settled: `None` where start times need no correction.
static FRAME: OnceLock<Option<u64>> = OnceLock::new();

/// The boot time every start time of this process is counted from (epoch seconds): the one
/// [`settle`] found, else the kernel's `btime` when it was first asked for. `None` off Linux
/// (and where `/proc/stat` has no `btime`).
pub fn frame() -> Option<u64> {
    *FRAME.get_or_init(btime)
}

/// A start time that sysinfo counted from the boot time `counted_from`, counted from `frame`
/// instead: the same whole seconds since boot.
pub fn corrected(start: u64, counted_from: u64, frame: u64) -> u64 {
    start.saturating_sub(counted_from).saturating_add(frame)
}

/// The kernel's `btime` as the newest [`super::Sys`] read it (0: none yet).
static LATEST: AtomicU64 = AtomicU64::new(0);

/// Notes the kernel's `btime` a new [`super::Sys`] counts from.
pub(super) fn seen(btime: Option<u64>) {
    if let Some(b) = btime {
        LATEST.store(b, Ordering::Relaxed);
    }
}

/// How far the kernel's `btime`, as last read, lies before the frame (seconds; 0 when it does
/// not, or off Linux): by how much the wall clock was stepped back since the frame was
/// settled, net. A record that another program wrote in its own wall clock after such a step
/// (Serena's `started_at`) can lie up to this much before the start time in the frame.
pub fn wall_shift() -> u64 {
    shift(frame(), LATEST.load(Ordering::Relaxed))
}

/// See [`wall_shift`]: `latest` 0 is unknown.
fn shift(frame: Option<u64>, latest: u64) -> u64 {
    match frame {
        Some(frame) if latest > 0 => frame.saturating_sub(latest),
        _ => 0,
    }
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

/// `boot.json` in the tray directory.
#[cfg(target_os = "linux")]
const FILE_NAME: &str = "boot.json";

/// What `boot.json` says: the boot and the frame start times are counted from during it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub boot_id: String,
    pub frame: u64,
}

/// The frame for the boot `boot_id` whose kernel `btime` is `btime` now: the recorded one if
/// `recorded` is of this boot, else `btime`.
pub fn frame_for(recorded: Option<&Record>, boot_id: &str, btime: u64) -> u64 {
    match recorded {
        Some(r) if r.boot_id == boot_id => r.frame,
        _ => btime,
    }
}

/// Settles the frame from `$SERENA_HOME/tray/boot.json` (see the module's docs), if it is not
/// settled yet, and records it there if the file names another boot or none (only when the
/// tray directory exists: reading does not make a Serena home). Call it before the first start
/// time is read; a later call keeps the frame in use. Blocking (two small reads).
pub fn settle(serena_home: &std::path::Path) {
    #[cfg(target_os = "linux")]
    settle_linux(&serena_home.join("tray"));
    #[cfg(not(target_os = "linux"))]
    let _ = serena_home;
}

#[cfg(target_os = "linux")]
fn settle_linux(tray: &Path) {
    let Some(boot_id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let path = tray.join(FILE_NAME);
    let recorded: Option<Record> = super::super::files::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let settled = *FRAME.get_or_init(|| Some(frame_for(recorded.as_ref(), &boot_id, btime()?)));
    let Some(frame) = settled else { return };
    match &recorded {
        Some(r) if r.boot_id == boot_id && r.frame != frame => {
            tracing::warn!(
                "{}: this boot's start times are counted from {}, this process counts from \
                 {frame} (settled before the file was read)",
                path.display(),
                r.frame
            );
        }
        Some(r) if r.boot_id == boot_id => {}
        _ if tray.is_dir() => {
            let record = Record { boot_id, frame };
            let write = serde_json::to_vec_pretty(&record)
                .map_err(std::io::Error::other)
                .and_then(|mut text| {
                    text.push(b'\n');
                    super::super::files::write_atomic(&path, &text)
                });
            if let Err(e) = write {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
        _ => {}
    }
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
    fn a_clock_stepped_back_since_the_frame_shifts_wall_times_back() {
        assert_eq!(shift(Some(10_000), 6_400), 3_600, "stepped back an hour");
        assert_eq!(shift(Some(10_000), 13_600), 0, "stepped forward: none");
        assert_eq!(shift(Some(10_000), 0), 0, "nothing read yet");
        assert_eq!(shift(None, 6_400), 0, "no frame");
    }

    #[test]
    fn the_frame_of_a_boot_is_kept_across_restarts_and_a_new_boot_starts_anew() {
        let rec = Record {
            boot_id: "a".into(),
            frame: 10_000,
        };
        // The same boot, the clock stepped while nothing ran: the recorded frame.
        assert_eq!(frame_for(Some(&rec), "a", 13_600), 10_000);
        assert_eq!(frame_for(Some(&rec), "b", 13_600), 13_600, "another boot");
        assert_eq!(frame_for(None, "a", 13_600), 13_600, "no record");
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
