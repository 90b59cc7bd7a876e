//! The shared registry file under real concurrency and real damage: 32 writer processes making
//! 200 read-modify-write updates each lose nothing; a corrupt file is moved aside (kept, never
//! deleted) and recovered from by `serena-tray list`; entries written by others with unknown or
//! missing fields are tolerated and kept.

mod common;

use common::*;
use serde_json::{json, Value};
use serena_tray::core::registry::Registry;
use std::path::PathBuf;
use std::process::Command;

const WRITERS: u32 = 32;
const UPDATES: u32 = 200;
/// The entry every writer increments (see tests/bin/registry_writer.rs).
const SHARED_PID: u32 = 1;

/// The writer process, an example that a full `cargo test` builds next to this test binary
/// (built here if this test was run alone).
fn writer_exe() -> PathBuf {
    let me = std::env::current_exe().expect("test binary");
    let dir = me.parent().and_then(|d| d.parent()).expect("target dir");
    let exe = dir
        .join("examples")
        .join(format!("registry-writer{}", std::env::consts::EXE_SUFFIX));
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--example", "registry-writer"])
            .current_dir(repo())
            .status()
            .expect("cargo build --example registry-writer");
        assert!(status.success());
    }
    assert!(exe.exists(), "{} is missing", exe.display());
    exe
}

#[test]
fn concurrent_writers_lose_nothing() {
    let home = Home::new();
    let serena_home = home.serena_home();
    let writer = writer_exe();
    let children: Vec<_> = (0..WRITERS)
        .map(|id| {
            Command::new(&writer)
                .arg(&serena_home)
                .arg(id.to_string())
                .arg(UPDATES.to_string())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a writer failed");
    }
    let entries = Registry::new(&serena_home).load().expect("load");
    let count = |pid: u32| {
        entries
            .iter()
            .filter(|e| e.pid == pid)
            .map(|e| e.last_heartbeat)
            .collect::<Vec<f64>>()
    };
    assert_eq!(count(SHARED_PID), vec![f64::from(WRITERS * UPDATES)]);
    for id in 0..WRITERS {
        assert_eq!(count(1000 + id), vec![f64::from(UPDATES)], "writer {id}");
    }
    assert_eq!(entries.len() as u32, WRITERS + 1);
    // No temporary file was left behind.
    let leftovers: Vec<String> = std::fs::read_dir(&serena_home)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_corrupt_registry_is_moved_aside_and_list_recovers() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    let garbage = "[{\"pid\": 12, \"port\": 24282,,, this is not JSON";
    std::fs::write(home.registry_path(), garbage).expect("write");
    let pid = reaper.adopt(spawn_fake(&home, &[], &[]));

    let out = home.tray(&["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt-"), "the user is told: {stderr}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(find_pid(&list, pid).is_some(), "discovery still works");

    let aside: Vec<PathBuf> = std::fs::read_dir(home.serena_home())
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("instances.json.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).expect("read"), garbage);
    let fresh = home.registry();
    assert!(fresh.iter().any(|e| e["pid"] == pid), "{fresh:?}");
}

#[test]
fn entries_written_by_others_are_tolerated_and_kept() {
    let home = Home::new();
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    let seeded = json!([
        // Missing fields (only a PID), of a process that is gone.
        {"pid": 4_000_000},
        // Unknown keys from a richer writer.
        {"pid": 4_000_001, "port": 24290, "started_at": 5.0, "last_heartbeat": 6.0, "context": "ide",
         "modes": ["m"], "project_name": "theirs", "state": "live_no_project",
         "writer": "patched-serena", "extra": {"nested": [1, 2]}},
        // Wrong types: cannot be read, must not be lost.
        {"pid": "not-a-number", "port": "x"},
    ]);
    std::fs::write(home.registry_path(), seeded.to_string()).expect("seed");

    let list = home.list_json();
    let first = find_pid(&list, 4_000_000).expect("listed");
    assert_eq!(first["state"], "zombie");
    assert_eq!(first["state_reason"], "dead");
    let second = find_pid(&list, 4_000_001).expect("listed");
    assert_eq!(second["project_name"], "theirs");

    let reg = home.registry();
    assert_eq!(reg.len(), 3, "nothing lost: {reg:?}");
    let theirs = reg.iter().find(|e| e["pid"] == 4_000_001).expect("kept");
    assert_eq!(theirs["writer"], "patched-serena");
    assert_eq!(theirs["extra"], json!({"nested": [1, 2]}));
    assert_eq!(
        theirs["state"], "zombie",
        "what this program learnt is written"
    );
    assert!(reg.iter().any(|e| e["pid"] == "not-a-number"));
}

#[test]
fn bad_arguments_get_one_clear_line_and_a_non_zero_exit() {
    let home = Home::new();
    for args in [
        vec!["list", "--bogus"],
        vec!["frobnicate"],
        vec!["--zombie-grace", "-3", "list"],
        vec!["--zombie-grace", "soon", "list"],
    ] {
        let out = home.tray(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("serena-tray: "), "{stderr}");
    }
    // A file where the home directory should be.
    let file = home.path().join("not-a-dir");
    std::fs::write(&file, "").expect("write");
    let out = Command::new(tray_exe())
        .arg("--serena-home")
        .arg(&file)
        .arg("list")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a directory"), "{stderr}");
}
