//! The tray app on a desktop of the test's own (Xvfb and a private D-Bus session bus, see
//! tests/common/desktop.rs), with real Serena instances:
//! - its tray item registers with the test's StatusNotifierWatcher; the menu, read over
//!   `com.canonical.dbusmenu`, names the instances as their tabs do and offers "Kill all zombies
//!   (1)" for a real orphan; clicking it over D-Bus reaps the orphan and its language server,
//!   the menu then reads "Kill all zombies (0)" (disabled) and the icon turns from red to green;
//!   "Launch at login" writes and removes the XDG autostart entry, and its check mark follows an
//!   entry removed by hand; "Quit" ends the app;
//! - a zombie is announced by exactly one notification (never again for it; one that was there
//!   before the app started too), whose "Kill" action kills exactly it, and whose click opens
//!   the dashboard window;
//! - a second start exits 0 and makes the first show its window, through the port check and the
//!   API (with or without a session bus);
//! - the window, driven by WebKitWebDriver, shows the dashboard with the instances' tabs (a
//!   screenshot is saved).

mod common;

use common::browser::{screenshots_dir, Browser};
use common::desktop::{
    has_window, window_process, Desktop, Item, MenuNode, NotificationServer, Watcher,
};
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Real Serena: start-up, then its dashboard and project (jedi) answer.
const STARTUP: Duration = Duration::from_secs(90);
/// The app's own reactions (a refresh, a menu rebuild, a kill).
const SOON: Duration = Duration::from_secs(30);
const GRACE: &str = "1";

/// The tray app on `desktop`, for `home`, on `port`; its output goes to `<home>/app-<port>.log`.
fn app_command(home: &Home, desktop: &Desktop, port: u16) -> Command {
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    desktop.env(&mut cmd);
    let log = std::fs::File::create(home.path().join(format!("app-{port}.log"))).expect("log");
    // The user's browser, as the app opens it (`xdg-open URL`): a script that writes down what
    // it was asked to open, in the home's `browser/opened`.
    let browser = home.path().join("browser");
    std::fs::create_dir_all(&browser).expect("mkdir");
    let script = browser.join("xdg-open");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n",
            browser.join("opened").display()
        ),
    )
    .expect("xdg-open");
    let mut perms = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(std::ffi::OsStr::to_os_string))
        .unwrap_or_default();
    let mut dirs = vec![browser];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    cmd.arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .args(["--zombie-grace", GRACE])
        .env("SERENA_TRAY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cmd
}

fn start_app(home: &Home, desktop: &Desktop, reaper: &mut Reaper) -> (u32, Daemon) {
    let port = free_port();
    let child = app_command(home, desktop, port)
        .arg("--minimized")
        .spawn()
        .expect("serena-tray");
    let pid = reaper.adopt(child);
    (pid, Daemon::attach_app(home, port, pid))
}

/// A real Serena whose client the test kills at once, its stdin held open by the test: an
/// orphan that lives on. Returns (Serena's PID, its tree with its language server, the stdin).
fn orphan(
    home: &Home,
    reaper: &mut Reaper,
    project: &str,
) -> (u32, Vec<u32>, std::process::ChildStdin) {
    let (client, serena, stdin) = client_with_serena(home, reaper, project);
    let tree = tree_with_language_server(serena);
    kill_one(client);
    (serena, tree, stdin)
}

fn menu_when(
    watcher: &Watcher,
    item: &Item,
    what: &str,
    f: impl Fn(&MenuNode) -> bool,
) -> MenuNode {
    wait_for(what, SOON, || Some(watcher.menu(item)).filter(|m| f(m)))
}

#[test]
fn the_tray_menu_names_instances_kills_zombies_toggles_launch_at_login_and_quits() {
    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let notifications = NotificationServer::start(&desktop);
    let home = Home::new();
    let mut reaper = Reaper::default();
    let green_dir = home.jedi_project("greenhouse");
    let (green, _green_stdin) =
        spawn_serena(&home, &["--project", green_dir.to_str().expect("utf8")]);
    let green = reaper.adopt(green);
    let (orphan, tree, _orphan_stdin) = orphan(&home, &mut reaper, "orphanage");
    let (app, api) = start_app(&home, &desktop, &mut reaper);

    let item = watcher.item(SOON);
    let red = format!("✕ {orphan} - orphanage");
    let menu = menu_when(
        &watcher,
        &item,
        "the orphan's red entry and one zombie to kill",
        |m| {
            m.find(&red).is_some()
                && m.find("Kill all zombies (1)").is_some_and(|n| n.enabled)
                && m.find(&format!("● {green} - greenhouse")).is_some()
        },
    );
    let labels = menu.labels();
    assert_eq!(labels[1], "Open dashboard", "{labels:?}");
    assert!(
        labels[0].contains("1 live, 1 zombie"),
        "the summary line: {labels:?}"
    );
    assert!(!menu.children[0].enabled, "the summary is information only");
    for l in ["New session...", "Launch at login", "Quit"] {
        assert!(labels.iter().any(|x| x == l), "{l} in {labels:?}");
    }
    // An instance's submenu: open it in the dashboard, its own Serena dashboard, kill.
    let sub: Vec<String> = menu
        .find(&red)
        .expect("entry")
        .children
        .iter()
        .map(|c| c.label.clone())
        .collect();
    assert_eq!(
        sub,
        ["Open in dashboard", "Open its Serena dashboard", "Kill"]
    );
    // "Open its Serena dashboard" opens that instance's own page in the browser.
    let (_, green_inst) = api.call("GET", &format!("/api/instances/{green}"), None);
    let green_port = green_inst["port"].as_u64().expect("a dashboard port");
    let own = menu
        .find(&format!("● {green} - greenhouse"))
        .and_then(|n| {
            n.children
                .iter()
                .find(|c| c.label == "Open its Serena dashboard")
        })
        .expect("its item")
        .id;
    watcher.click(&item, own);
    let opened = home.path().join("browser/opened");
    wait_for("the browser to be asked", SOON, || {
        std::fs::read_to_string(&opened)
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&opened).expect("opened").trim(),
        format!("http://127.0.0.1:{green_port}/dashboard/index.html")
    );
    assert_eq!(watcher.icon_colour(&item), "red");
    // A zombie there before the app started is announced too, once.
    let told = wait_for("the notification", SOON, || {
        notifications.received().into_iter().next()
    });
    assert_eq!(told.body, format!("{orphan} - orphanage"));

    // Kill all zombies, clicked over D-Bus: the orphan and its language server are reaped.
    watcher.click(&item, menu.find("Kill all zombies").expect("item").id);
    wait_for("the orphan's whole tree to be gone", SOON, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
    let menu = menu_when(&watcher, &item, "nothing left to kill", |m| {
        m.find("Kill all zombies (0)").is_some_and(|n| !n.enabled) && m.find(&red).is_none()
    });
    assert!(menu.find(&format!("● {green} - greenhouse")).is_some());
    assert!(alive(green), "only the zombie was killed");
    wait_for("the icon to turn green", SOON, || {
        (watcher.icon_colour(&item) == "green").then_some(())
    });

    // Launch at login: the XDG autostart entry, written and removed; the check mark is what
    // the system says, also when the entry goes by hand. Each step waits for the app to show
    // it: a new menu (the item gets a new id) with the mark as the file says.
    let entry = home.path().join(".config/autostart/Serena Tray.desktop");
    let shown = |old: i32, on: bool| {
        let m = menu_when(
            &watcher,
            &item,
            &format!("the menu rebuilt with launch at login {on}"),
            |m| {
                m.find("Launch at login")
                    .is_some_and(|n| n.id != old && n.checked == Some(on))
            },
        );
        assert_eq!(entry.exists(), on, "{}", entry.display());
        m.find("Launch at login").expect("item").id
    };
    let first = watcher.menu(&item);
    let autostart = first.find("Launch at login").expect("item");
    assert_eq!(autostart.checked, Some(false));
    assert!(!entry.exists());
    watcher.click(&item, autostart.id);
    let id = shown(autostart.id, true);
    let text = std::fs::read_to_string(&entry).expect("the autostart entry");
    assert!(
        text.contains(&format!("Exec={} --minimized", tray_app_exe().display())),
        "{text}"
    );
    watcher.click(&item, id);
    let id = shown(id, false);
    watcher.click(&item, id);
    let id = shown(id, true);
    std::fs::remove_file(&entry).expect("removed by hand");
    shown(id, false);

    // Quit ends the app (sessions it launched would live on, as a daemon's do).
    let quit = watcher.menu(&item).find("Quit").expect("Quit").id;
    watcher.click(&item, quit);
    let status = wait_for("the app to quit", SOON, || {
        reaper.child(app).and_then(|c| c.try_wait().ok()).flatten()
    });
    assert!(status.success(), "{status:?}");
    assert_eq!(
        notifications.received().len(),
        1,
        "{:?}",
        notifications.received()
    );
}

#[test]
fn a_new_zombie_is_announced_once_and_its_kill_action_kills_exactly_it() {
    let desktop = Desktop::start();
    let notifications = NotificationServer::start(&desktop);
    // No tray host on this desktop: the app says so and carries on.
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (app, _api) = start_app(&home, &desktop, &mut reaper);

    let (first, first_tree, _stdin1) = orphan(&home, &mut reaper, "alpha");
    let one = wait_for("a notification", STARTUP, || {
        notifications.received().into_iter().next()
    });
    assert_eq!(one.app_name, "Serena Tray");
    assert!(
        one.summary
            .starts_with("A Serena instance became a zombie, holding "),
        "{one:?}"
    );
    assert_eq!(one.body, format!("{first} - alpha"));
    assert_eq!(one.actions, ["default", "kill"]);

    // A second zombie later: its own notification; the first, seen on every refresh between,
    // is not announced again.
    let (second, _, _stdin2) = orphan(&home, &mut reaper, "beta");
    let two = wait_for("the second notification", STARTUP, || {
        notifications.received().get(1).cloned()
    });
    assert_eq!(two.body, format!("{second} - beta"));
    assert_eq!(
        notifications.received().len(),
        2,
        "{:?}",
        notifications.received()
    );

    // "Kill" on the first: exactly that instance goes, with its language server.
    notifications.invoke(one.id, "kill");
    wait_for("the first zombie's tree to be gone", SOON, || {
        first_tree.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(alive(second), "the other zombie is not touched");

    // A click on the second opens the dashboard window.
    assert!(!has_window(app));
    notifications.invoke(two.id, "default");
    wait_for("the dashboard window", SOON, || {
        has_window(app).then_some(())
    });
    assert_eq!(notifications.received().len(), 2);
    let log = std::fs::read_to_string(home.path().join(format!("app-{}.log", _api.port)))
        .unwrap_or_default();
    assert!(log.contains("no tray host"), "{log}");
}

#[test]
fn a_start_without_minimized_opens_the_window_under_the_class_the_desktop_entry_names() {
    let desktop = Desktop::start();
    let home = Home::new();
    let mut reaper = Reaper::default();
    let port = free_port();
    let child = app_command(&home, &desktop, port)
        .spawn()
        .expect("serena-tray");
    let app = reaper.adopt(child);
    let _api = Daemon::attach_app(&home, port, app);
    wait_for("the window at start", SOON, || {
        has_window(app).then_some(())
    });
    let entry = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/serena-tray.desktop"),
    )
    .expect("the packages' desktop entry");
    let named = entry
        .lines()
        .find_map(|l| l.strip_prefix("StartupWMClass="))
        .expect("StartupWMClass");
    let classes = wait_for("the window mapped", SOON, || {
        Some(desktop.window_classes("Serena Tray")).filter(|c| !c.is_empty())
    });
    assert!(
        classes.iter().all(|(_, class)| class == named),
        "{classes:?} vs StartupWMClass={named}"
    );
}

#[test]
fn a_second_start_exits_0_and_the_first_shows_its_window() {
    for session_bus in [true, false] {
        let desktop = Desktop::start();
        let home = Home::new();
        let mut reaper = Reaper::default();
        let (first, api) = start_app(&home, &desktop, &mut reaper);
        assert!(!has_window(first), "no window at start");
        // A second start `--minimized` (launch at login, `launch`) shows nothing.
        let mut quiet = app_command(&home, &desktop, api.port);
        if !session_bus {
            quiet.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        }
        let out = quiet
            .arg("--minimized")
            .stdout(Stdio::piped())
            .output()
            .expect("a second serena-tray --minimized");
        assert!(out.status.success(), "session bus {session_bus}: {out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("already running"), "{said}");
        assert!(!has_window(first), "session bus {session_bus}: no window");
        let mut second = app_command(&home, &desktop, api.port);
        if !session_bus {
            second.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        }
        let status = second
            .stdout(Stdio::piped())
            .status()
            .expect("a second serena-tray");
        assert!(status.success(), "session bus {session_bus}: {status:?}");
        wait_for("the first to show its window", SOON, || {
            has_window(first).then_some(())
        });
        assert!(
            reaper
                .child(first)
                .and_then(|c| c.try_wait().ok())
                .flatten()
                .is_none(),
            "the first keeps running"
        );
        assert_eq!(api.call("GET", "/api/instances", None).0, 200);
    }

    // Closing the window destroys it with its webview (WebKit's processes go); the app lives
    // on in the tray, and the next request shows a new window.
    let desktop = Desktop::start();
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (app, api) = start_app(&home, &desktop, &mut reaper);
    // `serena-tray open` shows the running app's window.
    let mut open = Command::new(tray_exe());
    home.env(&mut open);
    let out = open
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &api.port.to_string(), "open"])
        .output()
        .expect("serena-tray open");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("showing its dashboard window"), "{said}");
    assert!(!said.contains("token"), "{said}");
    wait_for("the window", SOON, || has_window(app).then_some(()));
    let first = window_process(app).expect("the window process");
    let asked = wait_for("the window to be mapped", SOON, || {
        Some(desktop.close_windows("Serena Tray")).filter(|n| *n > 0)
    });
    assert_eq!(asked, 1, "one dashboard window");
    wait_for("the webview's processes to go", SOON, || {
        (!has_window(app) && !alive(first)).then_some(())
    });
    assert!(alive(app), "the app lives on");
    assert_eq!(api.call("GET", "/api/health", None).0, 200);
    let show = || {
        let (status, _) = api.call("POST", "/api/window", Some(serde_json::json!({"pid": 1})));
        assert_eq!(status, 200);
    };
    show();
    wait_for("a new window", SOON, || has_window(app).then_some(()));
    // Closed and asked again at once (the window process may still be on its way out): a
    // window comes up all the same.
    let second = window_process(app).expect("the window process");
    assert_ne!(second, first);
    assert_eq!(desktop.close_windows("Serena Tray"), 1);
    show();
    wait_for("a third window", SOON, || {
        window_process(app)
            .filter(|p| *p != second && has_window(app))
            .map(|_| ())
    });

    // SIGTERM (a logout) ends it as Quit does.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = wait_for("the app to stop", SOON, || {
        reaper.child(app).and_then(|c| c.try_wait().ok()).flatten()
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_window_shows_the_dashboard_with_a_tab_per_instance() {
    let desktop = Desktop::start();
    let home = Home::new();
    let mut reaper = Reaper::default();
    let web = home.jedi_project("webapp");
    // Serena wrote its config while registering the project; ours is one more key in it.
    let config = home.serena_home().join("serena_config.yml");
    let mut text = std::fs::read_to_string(&config).expect("serena_config.yml");
    text.push_str("\nweb_dashboard_global_open_on_launch: true\n");
    std::fs::write(&config, text).expect("serena_config.yml");
    let (green, _s1) = spawn_serena(&home, &["--project", web.to_str().expect("utf8")]);
    let green = reaper.adopt(green);
    let (yellow, _s2) = spawn_serena(&home, &[]);
    let yellow = reaper.adopt(yellow);
    let (red, _, _s3) = orphan(&home, &mut reaper, "orphanage");

    let port = free_port();
    let args: Vec<String> = vec![
        "--serena-home".into(),
        home.serena_home().display().to_string(),
        "--port".into(),
        port.to_string(),
        "--tray-protocol-port".into(),
        free_port().to_string(),
        "--zombie-grace".into(),
        GRACE.into(),
    ];
    let b = Browser::webkit(&tray_exe(), &args, |cmd| {
        home.env(cmd);
        desktop.env(cmd);
    });
    // The page signed in through the login URL: no token in the address.
    let url = b.current_url();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{url}"
    );
    assert!(!url.contains("token"), "{url}");
    for (pid, colour, label) in [
        (green, "green", format!("{green} - webapp")),
        (yellow, "yellow", format!("{yellow} - NO PROJECT")),
        (red, "red", format!("{red} - orphanage")),
    ] {
        let tab = format!("[role=tab][data-pid='{pid}']");
        b.wait_until(&format!("the {colour} tab of {pid}"), STARTUP, |b| {
            let seen = b.execute(
                "const t = document.querySelector(arguments[0]);
                 return t ? [t.dataset.colour, t.querySelector('.tab-label').textContent] : null;",
                vec![serde_json::json!(tab)],
            );
            seen == serde_json::json!([colour, label])
        });
    }
    // What the tray menu asks for moves the open window: "New session..." opens the form, an
    // instance's "Open in dashboard" its tab (`POST /api/window`, as a second start does too).
    let api = Daemon::attach_app(&home, port, 0);
    let show = |body: serde_json::Value| {
        assert_eq!(api.call("POST", "/api/window", Some(body)).0, 200);
    };
    show(serde_json::json!({"new_session": true}));
    b.wait_until_js("document.getElementById('session-dialog').open", SOON);
    b.execute("document.getElementById('session-dialog').close()", vec![]);
    show(serde_json::json!({"pid": red}));
    b.wait_until_js(
        &format!(
            "document.querySelector('[role=tab][aria-selected=true]')?.dataset.pid == '{red}'"
        ),
        SOON,
    );
    b.wait_for_css("#panel .why:not([hidden])", SOON);
    // Asked again, the form opens again (the page gave the fragment back to the open tab).
    show(serde_json::json!({"new_session": true}));
    b.wait_until_js("document.getElementById('session-dialog').open", SOON);
    b.execute("document.getElementById('session-dialog').close()", vec![]);
    let shot: PathBuf = b.screenshot(screenshots_dir().join("tray-window.png"));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "{}",
        shot.display()
    );
}
