//! The tray app's entry point in a real X server (Xvfb) with a real D-Bus session: it starts,
//! stays up, and runs the core and the daemon in-process (the registry gets written, the API
//! answers); with no display it says so and runs as the daemon instead of crashing.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_tray_app_starts_under_xvfb_and_runs_the_core() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let port = free_port();
    let mut cmd = Command::new("xvfb-run");
    home.env(&mut cmd);
    let app = cmd
        .args(["-a", "dbus-run-session", "--"])
        .arg(tray_exe())
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
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
    let d = Daemon::attach(port, app);
    assert_eq!(
        d.raw("GET", "/api/health", None, &[]).0,
        200,
        "the API runs in the app"
    );
}

#[test]
fn without_a_display_the_tray_app_says_so_and_runs_as_the_daemon() {
    let home = Home::new();
    let port = free_port();
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    let mut child = cmd
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serena-tray");
    let stderr = child.stderr.take().expect("stderr");
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(child);
    let first = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .next()
        .unwrap_or_default();
    assert!(first.contains("no display"), "{first}");
    assert!(first.contains("running as the daemon"), "{first}");
    let d = Daemon::attach(port, pid);
    wait_for("the daemon to answer", Duration::from_secs(20), || {
        (d.raw("GET", "/api/health", None, &[]).0 == 200).then_some(())
    });
}
