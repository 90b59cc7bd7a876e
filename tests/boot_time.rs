//! A step of the wall clock moves the kernel's boot time (`btime` of `/proc/stat`, wall clock
//! now minus uptime), from which sysinfo turns each process's start (ticks since boot) into epoch
//! seconds, once per `System`. Stepping the machine's clock is not for a test, but what sysinfo
//! sees of a step can be: in a user and mount namespace of its own (`unshare --user
//! --map-root-user --mount`, no privileges needed) the test binary binds a copy of
//! `/proc/stat` whose `btime` is an hour later or earlier over the real one. Ticks since boot
//! in `/proc/PID/stat` stay as they are, as they do in a real step. Each test runs its half in
//! there by running this binary again (the environment variable [`INSIDE`] says which half);
//! where unprivileged user namespaces are not allowed it says so and is skipped (failed under CI). Checked: the
//! process table's readers one by one, a restart after a step in the same boot, and a core that
//! lists a (fake) Serena before the step and kills it after.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serena_tray::core::model::{Outcome, ProcessId};
use serena_tray::core::procs::{self, boot, ProcTable, Snapshot, Sys};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Set (to the test's name) in the namespace's run of this binary.
const INSIDE: &str = "SERENA_TRAY_TEST_INSIDE";

/// Whether this run is the namespace's half of `test`.
fn inside(test: &str) -> bool {
    std::env::var(INSIDE).is_ok_and(|v| v == test)
}

/// Runs the test `test` of this binary again in a user and mount namespace, `shell` run there
/// first (`"$@"` is the binary's command line); false (skipped, with the reason) where no such
/// namespace can be made.
fn in_namespace(test: &str, shell: &str, env: &[(&str, String)]) -> bool {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            skip_unless_ci(&format!(
                "{test}: no unprivileged user namespace here ({why})"
            ));
            return false;
        }
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!("{shell}\nexec \"$@\""))
        .arg("sh")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the namespace's half failed:\n{text}"
    );
    true
}

/// The real `btime`.
fn real_btime() -> u64 {
    boot::btime().expect("/proc/stat has a btime")
}

/// Writes a copy of `/proc/stat` whose `btime` is `btime` to `path`.
fn fake_stat(path: &Path, btime: u64) {
    let real = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let text: String = real
        .lines()
        .map(|l| {
            if l.starts_with("btime ") {
                format!("btime {btime}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, text).expect("write the copy");
}

/// Binds `file` over `/proc/stat` (in the namespace).
fn bind_stat(file: &Path) {
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(file)
        .arg("/proc/stat")
        .status()
        .expect("run mount");
    assert!(ok.success(), "mount --bind over /proc/stat");
}

fn unbind_stat() {
    let ok = Command::new("umount")
        .arg("/proc/stat")
        .status()
        .expect("run umount");
    assert!(ok.success(), "umount /proc/stat");
}

/// A process to look at (its output not inherited: a failed half's leftover does not hold the
/// pipe the outer half reads to its end).
fn sleeper() -> Child {
    Command::new("sleep")
        .arg("60")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_step_of_the_boot_time_changes_no_start_time() {
    const TEST: &str = "a_step_of_the_boot_time_changes_no_start_time";
    if !inside(TEST) {
        in_namespace(TEST, "", &[]);
        return;
    }
    let mut child = sleeper();
    let pid = child.id();
    let real = real_btime();
    // Tables made before the step: a long-lived one (as the refresh loop keeps) and a look.
    let mut long = Sys::new();
    let mut table = ProcTable::default();
    let before: ProcessId = table.look(&mut long, &[]).get(pid).expect("sleep").id();
    assert_eq!(procs::identity(pid), Some(before));
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    for step in [3600_i64, -3600] {
        let file = dir.path().join(format!("stat{step}"));
        fake_stat(&file, real.saturating_add_signed(step));
        bind_stat(&file);
        assert_eq!(
            boot::btime(),
            Some(real.saturating_add_signed(step)),
            "sysinfo sees the step"
        );
        // Tables made after the step: a one-process read, a whole table.
        assert_eq!(procs::identity(pid), Some(before), "step {step}");
        let fresh = Snapshot::capture(&mut Sys::new());
        assert_eq!(fresh.get(pid).map(|p| p.id()), Some(before), "step {step}");
        // The long-lived table, read again in full (a new System inside) and incrementally.
        assert_eq!(
            Snapshot::capture(&mut long).get(pid).map(|p| p.id()),
            Some(before)
        );
        assert_eq!(
            table.look(&mut long, &[pid]).get(pid).map(|p| p.id()),
            Some(before)
        );
        // Waiting for its exit waits on that very process (not "another process now").
        let waited = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_millis(300),
                serena_tray::core::watch::exited(before),
            )
            .await
        });
        assert!(waited.is_err(), "still waiting for it: {waited:?}");
        unbind_stat();
    }
    // After a step, the reaper still finds the process it is asked to kill, and kills it.
    let file = dir.path().join("stat-back");
    fake_stat(&file, real - 3600);
    bind_stat(&file);
    let timings = serena_tray::core::reaper::Timings {
        shutdown_wait: Duration::ZERO,
        term_wait: Duration::from_secs(2),
        verify_wait: Duration::from_secs(2),
    };
    let left = rt.block_on(serena_tray::core::reaper::kill_own_tree(before, &timings));
    assert!(left.is_empty(), "left alive: {left:?}");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed, not exited by itself: {status}");
}

#[test]
fn a_restart_in_the_same_boot_after_a_step_keeps_the_start_times() {
    const TEST: &str = "a_restart_in_the_same_boot_after_a_step_keeps_the_start_times";
    if !inside(TEST) {
        // This run: a Serena home whose record holds this boot's frame, and a process.
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(home.path().join("tray")).expect("tray dir");
        boot::settle(home.path());
        assert!(home.path().join("tray/boot.json").is_file(), "recorded");
        let mut child = sleeper();
        let id = procs::identity(child.id()).expect("sleep runs");
        // The next run starts after a step of an hour forward: it reads the record.
        let file = home.path().join("stat");
        fake_stat(&file, real_btime() + 3600);
        let env = [
            ("HOME_FOR_TEST", home.path().display().to_string()),
            ("PID_FOR_TEST", id.pid.to_string()),
            ("START_FOR_TEST", id.start_time.to_string()),
        ];
        let bind = format!("mount --bind '{}' /proc/stat || exit 1", file.display());
        in_namespace(TEST, &bind, &env);
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    let var = |k: &str| std::env::var(k).expect(k);
    let home = std::path::PathBuf::from(var("HOME_FOR_TEST"));
    let pid: u32 = var("PID_FOR_TEST").parse().expect("a PID");
    let start: u64 = var("START_FOR_TEST").parse().expect("a start time");
    let recorded: boot::Record =
        serde_json::from_slice(&std::fs::read(home.join("tray/boot.json")).expect("the record"))
            .expect("a record");
    assert_eq!(boot::btime(), Some(recorded.frame + 3600), "stepped");
    boot::settle(&home);
    assert_eq!(boot::frame(), Some(recorded.frame), "the recorded frame");
    assert_eq!(
        procs::identity(pid),
        Some(ProcessId {
            pid,
            start_time: start
        })
    );
}

#[test]
fn a_core_keeps_its_instance_across_a_step_and_kills_it() {
    const TEST: &str = "a_core_keeps_its_instance_across_a_step_and_kills_it";
    if !inside(TEST) {
        in_namespace(TEST, "", &[]);
        return;
    }
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let core = home.core(1.0);
    let seen = wait_for("the fake's dashboard", Duration::from_secs(20), || {
        block_on(core.refresh())
            .ok()?
            .into_iter()
            .find(|i| i.pid == fake && i.port.is_some())
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("stat");
    fake_stat(&file, real_btime() + 3600);
    bind_stat(&file);
    // The refresh after the step: the same instance (its identity, its start), nothing new.
    let now = block_on(core.refresh()).expect("refresh");
    let listed: Vec<_> = now.iter().filter(|i| i.pid == fake).collect();
    assert_eq!(listed.len(), 1, "{now:?}");
    assert_eq!(listed[0].started_at, seen.started_at);
    assert_eq!(listed[0].state, seen.state);
    // Killing it: the reaper's own table, made after the step, finds that very process.
    let report = block_on(core.kill(fake)).expect("killed");
    assert_ne!(report.outcome, Outcome::AlreadyGone, "{report:?}");
    wait_for("the fake gone", Duration::from_secs(10), || {
        (!alive(fake)).then_some(())
    });
}
