//! The tray app's menu counts asleep shared sessions apart, on a desktop of the test's own (Xvfb
//! and a private D-Bus session bus with a StatusNotifierWatcher, tests/common/desktop.rs): an
//! asleep session planted in `sessions.json` before the app starts reads `1 asleep` on the
//! menu's first line, with no entry (it has no Serena); woken through the API, its Serena (the
//! fake Serena as the Serena command) is `1 live` with an entry that counts its two clients,
//! and `asleep` is gone from the summary.

mod common;

use common::asleep::{asleep_record, attachment, bridge, epoch_now, plant_sessions};
use common::desktop::{Desktop, Watcher};
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The app's own reactions (a start, a menu rebuild, a wake).
const SOON: Duration = Duration::from_secs(30);

#[test]
fn the_menu_counts_an_asleep_session_apart_until_it_wakes() {
    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let home = Home::new();
    home.tray_config(&common::fake::command_config(""));
    let mut reaper = Reaper::default();
    let project = home.path().join("dozing");
    std::fs::create_dir_all(&project).expect("mkdir");
    let since = epoch_now() - 60.0;
    let clients = vec![
        attachment(bridge(&home, &mut reaper), "claude", since),
        attachment(bridge(&home, &mut reaper), "cursor", since),
    ];
    plant_sessions(
        &home,
        &[asleep_record(
            "dozing1",
            &project,
            "unused",
            since,
            Some(300 << 20),
            clients,
        )],
    );

    let port = free_port();
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    desktop.env(&mut cmd);
    let log = std::fs::File::create(home.path().join("app.log")).expect("log");
    let app = cmd
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .arg("--minimized")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("serena-tray");
    let app = reaper.adopt(app);
    let api = Daemon::attach_app(&home, port, app);

    let item = watcher.item(SOON);
    let menu = wait_for("the summary to count the asleep session", SOON, || {
        Some(watcher.menu(&item)).filter(|m| m.labels().first().is_some_and(|l| l == "1 asleep"))
    });
    let labels = menu.labels();
    assert_eq!(labels[1], "Open dashboard", "{labels:?}");
    assert!(
        !labels.iter().any(|l| l.contains("dozing")),
        "no entry without a Serena: {labels:?}"
    );

    let (status, woken) = api.call("POST", "/api/sessions/dozing1/wake", None);
    assert_eq!(status, 200, "{woken}");
    let pid = woken["pid"].as_u64().expect("its Serena's PID") as u32;
    reaper.watch(pid);
    let entry = format!("● {pid} - dozing (2 clients)");
    let menu = wait_for("the woken Serena's entry", SOON, || {
        Some(watcher.menu(&item)).filter(|m| m.find(&entry).is_some())
    });
    let summary = &menu.labels()[0];
    assert!(summary.starts_with("1 live, "), "{summary}");
    assert!(!summary.contains("asleep"), "{summary}");
}
