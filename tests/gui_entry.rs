//! The tray app's entry point in a real X server (Xvfb) with a real D-Bus session: it starts,
//! stays up, and runs the core (the registry gets written); with no display it says so in one
//! line instead of crashing.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_tray_app_starts_under_xvfb_and_runs_the_core() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let mut cmd = Command::new("xvfb-run");
    home.env(&mut cmd);
    let app = cmd
        .args(["-a", "dbus-run-session", "--"])
        .arg(tray_exe())
        .arg("--serena-home")
        .arg(home.serena_home())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xvfb-run (installed by the test command)");
    let app = reaper.adopt(app);
    // The app's own refresh loop registers the fake Serena.
    wait_for(
        "the app to write the registry",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(home.registry_path())
                .ok()
                .filter(|t| t.contains(&format!("\"pid\": {fake}")))
        },
    );
    let still_running = reaper.child(app).and_then(|c| c.try_wait().ok()).flatten();
    assert!(still_running.is_none(), "the app exited: {still_running:?}");
}

#[test]
fn without_a_display_the_tray_app_says_so() {
    let home = Home::new();
    let out = home.tray(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no display"), "{stderr}");
}
