//! This program's own files as a user meets them: `serena-tray daemon` refuses, with one clear
//! line naming the directory, a `tray/` that group or others may write to; a normal start leaves
//! `tray/` at 0700 and the token at 0600.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_group_writable_tray_dir_is_refused_with_one_line() {
    let home = Home::new();
    let tray = home.serena_home().join("tray");
    std::fs::create_dir_all(&tray).expect("mkdir");
    std::fs::set_permissions(&tray, std::fs::Permissions::from_mode(0o775)).expect("chmod");

    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    let mut child = cmd
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["daemon", "--port", &free_port().to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    // It must stop by itself; a daemon that started anyway is killed, and the test fails.
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it refused to start: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(&tray.display().to_string()), "{stderr}");
    assert!(lines[0].contains("writable by group or others"), "{stderr}");
    assert!(lines[0].contains("chmod 700"), "{stderr}");
    assert!(
        !tray.join("token").exists(),
        "no token made in a directory others could write to"
    );
    assert_eq!(mode(&tray), 0o775, "not repaired behind the user's back");
}

#[test]
fn a_normal_start_leaves_tray_0700_and_the_token_0600() {
    let home = Home::new();
    let mut daemon = home.daemon();
    let tray = home.serena_home().join("tray");
    assert_eq!(mode(&tray), 0o700);
    assert_eq!(mode(&tray.join("token")), 0o600);
    assert!(daemon.stop().is_some());
}
