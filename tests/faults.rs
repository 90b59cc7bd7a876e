//! Faults the program must survive, each made for real: a full disk and a read-only
//! `SERENA_HOME` (a small tmpfs of the test's own, as root), a first start on a full disk, what
//! the page says meanwhile (Chromium), and the daemon SIGKILLed in the middle of a launch and
//! at a sweep of moments of requests, releases and "Kill all zombies". The fake Serena stands
//! in where a real one cannot be made to misbehave on demand (a slow start-up); the soak
//! (`cargo bench --bench system -- soak`) puts these faults together over time.

mod common;

use common::disk::SmallDisk;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The home's `SERENA_HOME` on a small disk of its own, or why the test cannot run (skipped out
/// loud, failed under CI).
fn small_disk(home: &Home) -> Option<SmallDisk> {
    match SmallDisk::mount(&home.serena_home(), 8) {
        Ok(disk) => Some(disk),
        Err(e) => {
            skip_unless_ci(&format!("cannot mount a tmpfs (it needs root): {e}"));
            None
        }
    }
}

fn sessions_path(home: &Home) -> PathBuf {
    home.serena_home().join("tray/sessions.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn registry_pids(home: &Home) -> Vec<u64> {
    let text = std::fs::read_to_string(home.registry_path()).unwrap_or_default();
    let entries: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    entries.iter().filter_map(|e| e["pid"].as_u64()).collect()
}

/// Every line of the timeline is a whole JSON object.
fn assert_timeline_whole(home: &Home) {
    // None yet is whole too.
    let text =
        std::fs::read_to_string(home.serena_home().join("tray/events.jsonl")).unwrap_or_default();
    for line in text.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v["type"].is_string()),
            "a broken timeline line: {line:?}"
        );
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the timeline ends mid-line"
    );
}

/// How one phase breaks the disk, and what the kernel then says to a write.
#[derive(Clone, Copy)]
enum Fault {
    Full,
    ReadOnly,
}

impl Fault {
    fn apply(self, disk: &SmallDisk) {
        match self {
            Fault::Full => disk.fill(),
            Fault::ReadOnly => disk.read_only(true),
        }
    }

    fn undo(self, disk: &SmallDisk) {
        match self {
            Fault::Full => disk.free(),
            Fault::ReadOnly => disk.read_only(false),
        }
    }

    fn error(self) -> &'static str {
        match self {
            Fault::Full => "No space left on device",
            Fault::ReadOnly => "Read-only file system",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Full => "full",
            Fault::ReadOnly => "read-only",
        }
    }
}

fn is_write(kind: &'static str, file: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind && v["file"] == file
}

fn instance_added(pid: u32) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "instance_added" && v["instance"]["pid"] == pid
}

fn expect_event(rx: &Receiver<(Instant, Value)>, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    next_event(rx, Duration::from_secs(30), f)
        .unwrap_or_else(|| panic!("no {what} event"))
        .1
}

#[test]
fn a_full_disk_and_a_read_only_home_keep_every_file_whole_and_writes_resume_without_a_restart() {
    let home = Home::new();
    let Some(disk) = small_disk(&home) else {
        return;
    };
    home.tray_config(&fake::command_config(""));
    let d = home.daemon();
    let mut reaper = Reaper::default();
    for fault in [Fault::Full, Fault::ReadOnly] {
        survive(&home, &d, &disk, &mut reaper, fault);
    }
    assert!(alive(d.pid), "the daemon stopped");
}

/// One fault while the daemon runs: a session started before it is released during it and
/// instances come; the files keep what they had, each failing file is one log line and one
/// `write_failed` (also in a new page's snapshot); after it, every change is written, with no
/// restart.
fn survive(home: &Home, d: &Daemon, disk: &SmallDisk, reaper: &mut Reaper, fault: Fault) {
    eprintln!("== {}", fault.name());
    let project = home.path().join(fault.name());
    std::fs::create_dir_all(&project).expect("mkdir");
    let (status, s) = d.request_session(json!({"project_path": project}));
    assert_eq!(status, 201, "{s:?}");
    let (id, serena) = (
        s["session_id"].clone(),
        s["pid"].as_u64().expect("pid") as u32,
    );
    let first = reaper.adopt(spawn_fake(home, &[], &[]));
    wait_for(
        "the first instance in the registry",
        Duration::from_secs(20),
        || {
            registry_pids(home)
                .contains(&u64::from(first))
                .then_some(())
        },
    );
    let log_before = read(&home.daemon_log(d.port)).len();
    let rx = events(d);
    let (registry, sessions) = (read(&home.registry_path()), read(&sessions_path(home)));

    fault.apply(disk);
    let second = reaper.adopt(spawn_fake(home, &[], &[]));
    let failed = expect_event(
        &rx,
        "registry write_failed",
        is_write("write_failed", "registry"),
    );
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains(fault.error())),
        "{failed}"
    );
    // Nothing else stops: the instance is seen, the session is released and its Serena gone.
    expect_event(&rx, "the second instance", instance_added(second));
    let (status, r) = d.call("POST", "/release-session", Some(json!({"session_id": id})));
    assert_eq!((status, &r["status"]), (200, &json!("terminated")), "{r}");
    assert!(!alive(serena), "the released Serena runs");
    expect_event(
        &rx,
        "sessions write_failed",
        is_write("write_failed", "sessions"),
    );
    // Another change fails quietly (told once).
    let third = reaper.adopt(spawn_fake(home, &[], &[]));
    expect_event(&rx, "the third instance", instance_added(third));
    assert_eq!(
        read(&home.registry_path()),
        registry,
        "the registry changed"
    );
    assert_eq!(
        read(&sessions_path(home)),
        sessions,
        "sessions.json changed"
    );
    assert_timeline_whole(home);
    let log = read(&home.daemon_log(d.port))[log_before..].to_string();
    // (The registry's failure may name its lock file, `instances.json.lock`.)
    for path in [home.registry_path(), sessions_path(home)] {
        let told = format!("cannot write {}", path.display());
        let lines = log
            .lines()
            .filter(|l| l.contains(&told) && l.contains(fault.error()));
        assert_eq!(lines.count(), 1, "{told:?} in\n{log}");
    }
    // A page opened now shows both.
    let (_, snapshot) = next_event(&events(d), Duration::from_secs(10), |v| {
        v.get("write_failures").is_some()
    })
    .expect("a snapshot");
    let failing: Vec<&str> = (snapshot["write_failures"]
        .as_array()
        .expect("a list")
        .iter())
    .filter_map(|f| f["file"].as_str())
    .collect();
    assert!(
        failing.contains(&"registry") && failing.contains(&"sessions"),
        "{snapshot}"
    );

    fault.undo(disk);
    // Both, in either order.
    let mut recovered = vec![];
    while recovered.len() < 2 {
        let (_, v) = next_event(&rx, Duration::from_secs(30), |v| {
            v["type"] == "write_recovered"
        })
        .unwrap_or_else(|| panic!("recovered only {recovered:?}"));
        recovered.push(v["file"].as_str().unwrap_or_default().to_string());
        recovered.retain(|f| f == "registry" || f == "sessions");
        recovered.dedup();
    }
    let pids = registry_pids(home);
    assert!(
        [second, third]
            .iter()
            .all(|p| pids.contains(&u64::from(*p))),
        "{pids:?}"
    );
    let stored: Vec<Value> = serde_json::from_str(&read(&sessions_path(home))).expect("JSON");
    let ended = stored
        .iter()
        .find(|s| s["session_id"] == id)
        .expect("the session");
    assert!(ended["ended_at"].is_number(), "{ended}");
    for pid in [first, second, third] {
        kill_tree(pid);
    }
}

#[test]
fn a_first_start_on_a_full_disk_runs_on_a_token_in_memory_and_writes_it_when_space_returns() {
    let home = Home::new();
    let Some(disk) = small_disk(&home) else {
        return;
    };
    disk.fill();
    let mut d = home.daemon_without_token();
    let token = home.serena_home().join("tray/token");
    let told = format!("cannot write {}: No space left on device", token.display());
    wait_for("the failure in the log", Duration::from_secs(10), || {
        read(&home.daemon_log(d.port)).contains(&told).then_some(())
    });
    assert!(!token.exists());

    disk.free();
    d.token = wait_for("the token written", Duration::from_secs(20), || {
        std::fs::read_to_string(&token).ok()
    });
    // The token on disk is the one the running daemon answers to.
    let (status, _) = d.call("GET", "/api/instances", None);
    assert_eq!(status, 200);
    let log = read(&home.daemon_log(d.port));
    assert_eq!(log.matches(&told).count(), 1, "{log}");
    assert!(
        log.contains(&format!("wrote {} again", token.display())),
        "{log}"
    );
}

/// The sessions of `sessions.json` that are awake: (session ID, PID, start time).
fn recorded_awake(home: &Home) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(sessions_path(home)).unwrap_or_else(|_| "[]".into());
    let stored: Vec<Value> = serde_json::from_str(&text).expect("sessions.json is whole JSON");
    stored
        .iter()
        .filter(|s| s["ended_at"].is_null() && s["asleep_since"].is_null())
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            let id = s["session_id"].as_str().unwrap_or_default().to_string();
            (id, n("pid"), n("start_time"))
        })
        .collect()
}

/// After a restart: every fake Serena of `project` is recorded as an awake session (the
/// record's PID and start time are that process), or is stopped by the daemon; every awake
/// record is such a Serena. The files are whole.
fn assert_every_serena_recorded(home: &Home, project: &Path) {
    let mut seen = String::new();
    let settled = poll(Duration::from_millis(50), Duration::from_secs(30), || {
        let snap = snapshot();
        let awake = recorded_awake(home);
        let running = fake_servers_on(project);
        let unrecorded: Vec<&u32> = (running.iter())
            .filter(|pid| {
                let p = snap.get(**pid);
                !awake.iter().any(|(_, rp, rs)| {
                    p.is_some_and(|p| u64::from(p.pid) == *rp && p.start_time == *rs)
                })
            })
            .collect();
        let stale: Vec<_> = (awake.iter())
            .filter(|(_, pid, _)| !running.contains(&(*pid as u32)))
            .collect();
        seen = format!("running without a record: {unrecorded:?}; records of no Serena: {stale:?}");
        (unrecorded.is_empty() && stale.is_empty()).then_some(())
    });
    assert!(settled.is_some(), "{seen}");
    if let Ok(registry) = std::fs::read_to_string(home.registry_path()) {
        serde_json::from_str::<Vec<Value>>(&registry).expect("instances.json is whole JSON");
    }
    assert_timeline_whole(home);
}

/// A daemon of `home` on the same ports again, after a SIGKILL.
fn restarted(home: &Home, killed: Daemon) -> Daemon {
    let (port, tray_port) = (killed.port, killed.tray_port);
    // Dropping it is a SIGKILL, waited for.
    drop(killed);
    home.daemon_on(port, tray_port)
}

/// A handle on the same daemon for another thread (not owning it).
fn handle(d: &Daemon) -> Daemon {
    let mut h = Daemon::attach(d.port, d.pid);
    h.token = d.token.clone();
    h
}

#[test]
fn a_daemon_killed_mid_launch_leaves_no_serena_without_a_record() {
    let home = Home::new();
    home.tray_config(&fake::command_config(""));
    let project = home.path().join("slow");
    std::fs::create_dir_all(&project).expect("mkdir");
    let d = home.daemon_with(
        free_port(),
        free_port(),
        &[("FAKE_SERENA_START_DELAY", "60")],
    );
    let asking = handle(&d);
    let body = json!({"project_path": project});
    let request =
        std::thread::spawn(move || asking.call_cut("POST", "/request-session", Some(body)));
    let serena = wait_for("the launched Serena", Duration::from_secs(20), || {
        fake_servers_on(&project).first().copied()
    });

    let d = restarted(&home, d);
    assert_eq!(
        request.join().expect("the request").0,
        0,
        "answered by a killed daemon"
    );
    wait_for(
        "the unrecorded Serena stopped",
        Duration::from_secs(20),
        || (!alive(serena)).then_some(()),
    );
    assert_every_serena_recorded(&home, &project);
    let timeline = read(&home.serena_home().join("tray/events.jsonl"));
    assert!(
        timeline
            .lines()
            .any(|l| l.contains("session_failed")
                && l.contains(&format!("(PID {serena}) was stopped"))),
        "{timeline}"
    );
    assert!(alive(d.pid));
}

#[test]
fn a_daemon_killed_at_any_moment_of_a_request_or_a_release_leaves_every_record_true() {
    let home = Home::new();
    home.tray_config(&fake::command_config(""));
    let project = home.path().join("sweep");
    std::fs::create_dir_all(&project).expect("mkdir");
    let mut d = home.daemon();
    // Moments after the call, across a launch (a few hundred ms with the fake) and a release.
    for delay_ms in [0, 5, 20, 50, 100, 200, 400, 800] {
        let delay = Duration::from_millis(delay_ms);
        let asking = handle(&d);
        let body = json!({"project_path": project});
        let request =
            std::thread::spawn(move || asking.call_cut("POST", "/request-session", Some(body)));
        std::thread::sleep(delay);
        d = restarted(&home, d);
        let (status, answer) = request.join().expect("the request");
        eprintln!("request killed after {delay_ms} ms: {status}");
        assert_every_serena_recorded(&home, &project);
        if status != 201 {
            continue;
        }
        // The session it got is recorded: released now, with the daemon killed meanwhile.
        let asking = handle(&d);
        let body = json!({"session_id": answer["session_id"]});
        let release =
            std::thread::spawn(move || asking.call_cut("POST", "/release-session", Some(body)));
        std::thread::sleep(delay);
        d = restarted(&home, d);
        eprintln!(
            "release killed after {delay_ms} ms: {}",
            release.join().expect("release").0
        );
        assert_every_serena_recorded(&home, &project);
    }
    // What is left is recorded, and a release stops it.
    for (id, pid, _) in recorded_awake(&home) {
        let (status, r) = d.call("POST", "/release-session", Some(json!({"session_id": id})));
        assert_eq!(status, 200, "{r}");
        assert!(!alive(pid as u32));
    }
    assert!(fake_servers_on(&project).is_empty());
}

#[test]
fn the_page_says_which_file_cannot_be_written_until_it_is_written_again() {
    let Some(b) = common::browser::Browser::start() else {
        return;
    };
    let home = Home::new();
    let Some(disk) = small_disk(&home) else {
        return;
    };
    let d = home.daemon();
    let mut reaper = Reaper::default();
    let page = Duration::from_secs(30);
    b.goto(&d.url(&format!("/?token={}", d.token)));
    b.wait_until_js("document.documentElement.dataset.ready == '1'", page);

    disk.fill();
    reaper.adopt(spawn_fake(&home, &[], &[]));
    let notice = "document.getElementById('notice')";
    let failing = format!(
        "!{notice}.hidden && {notice}.dataset.kind == 'error' \
         && {notice}.textContent.includes('Cannot write {}') \
         && {notice}.textContent.includes('No space left on device')",
        home.registry_path().display()
    );
    b.wait_until_js(&failing, page);
    // A page opened meanwhile shows it too.
    b.goto(&d.url("/"));
    b.wait_until_js(&failing, page);
    let shot = common::browser::screenshots_dir().join("dashboard-disk-full.png");
    b.screenshot(&shot);

    disk.free();
    b.wait_until_js(
        &format!(
            "!{notice}.hidden && {notice}.dataset.kind == 'ok' \
             && {notice}.textContent.includes('written again')"
        ),
        page,
    );
}

/// The PIDs the daemon lists as zombies now.
fn listed_zombies(d: &Daemon) -> Vec<u64> {
    let (_, list) = d.call("GET", "/api/instances", None);
    (list.as_array().into_iter().flatten())
        .filter(|i| i["state"] == "zombie")
        .filter_map(|i| i["pid"].as_u64())
        .collect()
}

#[test]
fn a_daemon_killed_in_the_middle_of_kill_all_zombies_kills_only_zombies_and_forgets_none() {
    let home = Home::new();
    home.tray_config("zombie_grace = 1\n");
    let mut reaper = Reaper::default();
    let mut d = home.daemon();
    // A live Serena with its client, which nothing may touch.
    let (_, live) = spawn_fake_client(&home, &mut reaper);
    for delay_ms in [0, 20, 100, 400] {
        let zombies: Vec<u32> = (0..3)
            .map(|_| {
                let (client, serena) = spawn_fake_client(&home, &mut reaper);
                kill_one(client);
                serena
            })
            .collect();
        wait_for("three zombies", Duration::from_secs(20), || {
            let listed = listed_zombies(&d);
            zombies
                .iter()
                .all(|z| listed.contains(&u64::from(*z)))
                .then_some(())
        });
        let asking = handle(&d);
        let kill_all = std::thread::spawn(move || {
            asking.call_cut("POST", "/api/zombies/kill", Some(json!({})))
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        d = restarted(&home, d);
        let (status, _) = kill_all.join().expect("kill-all");
        let killed = zombies.iter().filter(|z| !alive(**z)).count();
        eprintln!("kill-all killed after {delay_ms} ms: {status}, {killed} of 3 gone");
        // Each zombie is gone or shown again as a zombie; the live one runs.
        wait_for(
            "every zombie gone or shown",
            Duration::from_secs(20),
            || {
                let listed = listed_zombies(&d);
                zombies
                    .iter()
                    .all(|z| !alive(*z) || listed.contains(&u64::from(*z)))
                    .then_some(())
            },
        );
        assert!(alive(live), "the live Serena was killed");
        let (status, r) = d.call("POST", "/api/zombies/kill", Some(json!({})));
        assert_eq!(status, 200, "{r}");
        assert!(zombies.iter().all(|z| !alive(*z)), "{r}");
    }
    assert!(alive(live), "the live Serena was killed");
}
