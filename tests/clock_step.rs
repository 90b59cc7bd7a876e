//! A real step of the daemon's wall clock while an orphan's grace runs. The daemon runs under
//! libfaketime: its wall clock is shifted by what a file of the test's says (read again at every
//! look), its monotonic clock is left alone, as in a resume from suspend or an NTP correction.
//! The file steps it an hour forward while one orphan's grace runs, then an hour back while
//! another's does: each turns red when the grace is over on the monotonic clock, neither at once
//! nor an hour late. Where libfaketime is not installed (Debian `faketime`, which
//! `.ci/setup --test` installs) the test says so and is skipped.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Debian's libfaketime, under the machine's multiarch directory.
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.is_file())
}

/// The zombie grace of the test's daemon.
const GRACE: Duration = Duration::from_secs(15);

/// The state the daemon shows for `pid`, if it lists it.
fn state_of(d: &Daemon, pid: u32) -> Option<String> {
    let (status, list) = d.call("GET", "/api/instances", None);
    assert_eq!(status, 200, "{list}");
    list.as_array()?
        .iter()
        .find(|i| i["pid"] == pid)
        .and_then(|i| i["state"].as_str().map(String::from))
}

#[test]
fn an_orphans_grace_lasts_the_grace_when_the_wall_clock_steps_an_hour_either_way() {
    let Some(lib) = libfaketime() else {
        skip_unless_ci(
            "no /usr/lib/*/faketime/libfaketime.so.1 (Debian package faketime) to step the daemon's wall clock",
        );
        return;
    };
    let home = Home::new();
    home.tray_config(&format!("zombie_grace = {}\n", GRACE.as_secs()));
    let offset = home.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("write the offset");
    let offset_path = offset.to_str().expect("utf8");
    let (port, tray_port) = (free_port(), free_port());
    let d = home.daemon_with(
        port,
        tray_port,
        &[
            ("LD_PRELOAD", lib.to_str().expect("utf8")),
            ("FAKETIME_TIMESTAMP_FILE", offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut reaper = Reaper::default();

    for (step, to) in [("+3600", "+1h"), ("-3600", "+0")] {
        let (client, serena) = spawn_fake_client(&home, &mut reaper);
        wait_for(
            "the daemon to show the fake",
            Duration::from_secs(30),
            || state_of(&d, serena).filter(|s| s.starts_with("live")),
        );
        kill(Pid::from_raw(client as i32), Signal::SIGKILL).expect("kill the client");
        if let Some(c) = reaper.child(client) {
            let _ = c.wait();
        }
        let orphaned = Instant::now();
        // The daemon sees the client's exit at once (its exit watcher); the grace runs. A few
        // seconds into it, the wall clock steps.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            state_of(&d, serena).as_deref(),
            Some("live_no_project"),
            "within the grace"
        );
        std::fs::write(&offset, format!("{to}\n")).expect("step the clock");
        wait_for("the orphan to turn red", GRACE * 2, || {
            (state_of(&d, serena).as_deref() == Some("zombie")).then_some(())
        });
        let red_after = orphaned.elapsed();
        eprintln!("stepped by {step} s: red {red_after:?} after its client's exit");
        assert!(
            red_after + Duration::from_secs(1) >= GRACE,
            "stepped by {step} s: red after {red_after:?}, before the grace of {GRACE:?} was over"
        );
        let log = std::fs::read_to_string(home.daemon_log(port)).expect("daemon log");
        assert!(
            log.contains(&format!("the wall clock stepped by {step} s")),
            "the daemon did not see the step by {step} s:\n{log}"
        );
    }
}
