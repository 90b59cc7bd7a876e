//! The Linux packages, checked as a user gets them. `.ci/package` builds the `.deb` and the
//! `.rpm` (the Tauri CLI; a no-op but for re-bundling when they are up to date). With `CI=true`
//! the `.deb` is installed with apt, its commands, desktop entry, icon and tray app are checked
//! from `/usr`, and it is removed again, leaving nothing of it behind; anywhere else (a
//! developer's machine, where installing would touch the system) it is unpacked with
//! `dpkg-deb -x` and the same files are checked there.

mod common;

use common::desktop::{Desktop, Watcher};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const DESKTOP_FILE: &str = "usr/share/applications/Serena Tray.desktop";
/// The runtime libraries the tray app links, by the names of Debian's and Fedora's packages.
const DEB_DEPENDS: [&str; 3] = [
    "libwebkit2gtk-4.1-0",
    "libgtk-3-0",
    "libayatana-appindicator3-1",
];
const RPM_REQUIRES: [&str; 3] = [
    "libwebkit2gtk-4.1.so.0()(64bit)",
    "libgtk-3.so.0()(64bit)",
    "libayatana-appindicator-gtk3",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.deb` and the `.rpm`, built once for this test binary.
fn packages() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Without cargo's variables for this test: the build .ci/package runs then is the very
        // build it runs alone (up to date after the test command's own run of it).
        let mut package = Command::new("bash");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CARGO_") || k == "RUSTFLAGS" {
                package.env_remove(k);
            }
        }
        let out = package
            .arg(".ci/package")
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .expect("bash .ci/package");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        assert!(out.status.success(), ".ci/package failed:\n{}", {
            let mut t = tail;
            t.reverse();
            t.join("\n")
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let made: Vec<PathBuf> = stdout
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(|p| repo().join(p))
            .collect();
        let find = |ext: &str| {
            made.iter()
                .find(|p| p.extension().is_some_and(|e| e == ext))
                .cloned()
                .unwrap_or_else(|| panic!("no .{ext} in what .ci/package made:\n{stdout}"))
        };
        (find("deb"), find("rpm"))
    })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `apt-get`/`dpkg` as root: directly when this is root, else through sudo.
fn as_root(program: &str) -> Command {
    let root = rustix::process::geteuid().is_root();
    let mut cmd = Command::new(if root { program } else { "sudo" });
    if !root {
        cmd.arg(program);
    }
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "serena-tray"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The package installed for the test's length: removed again when dropped, a failed test too.
struct Installed;

impl Installed {
    fn install(deb: &Path) -> Installed {
        assert!(
            !installed(),
            "serena-tray is already installed on this machine: the install test will not replace \
             (and then remove) it; run it on a machine without it"
        );
        run(as_root("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .arg(deb));
        Installed
    }

    fn remove(self) {
        std::mem::forget(self);
        run(as_root("apt-get").args(["purge", "-y", "-q", "serena-tray"]));
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = as_root("apt-get")
            .args(["purge", "-y", "-q", "serena-tray"])
            .stdout(Stdio::null())
            .status();
    }
}

/// The files (not folders) the `.deb` holds, as paths relative to `/`: the last column of
/// `dpkg-deb -c` (mode, owner, size, date, time, path; a path may hold spaces).
fn deb_files(deb: &Path) -> Vec<String> {
    text(&run(Command::new("dpkg-deb").arg("-c").arg(deb)))
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let mut rest = l;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').unwrap_or(rest.len())..];
            }
            rest.trim_start().trim_start_matches("./").to_owned()
        })
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    text(&run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)))
        .trim()
        .to_owned()
}

fn commit() -> String {
    text(&run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())))
    .trim()
    .to_owned()
}

#[test]
fn the_deb_installs_runs_from_usr_and_removes_without_a_trace() {
    let (deb, _) = packages();
    assert_eq!(field(deb, "Package"), "serena-tray");
    assert_eq!(field(deb, "Version"), VERSION);
    let depends = field(deb, "Depends");
    for lib in DEB_DEPENDS {
        assert!(depends.contains(lib), "Depends: {depends}");
    }
    assert!(!depends.contains("-dev"), "Depends: {depends}");
    let files = deb_files(deb);
    for f in [
        "usr/bin/serena-tray",
        "usr/bin/serena-tray-app",
        "usr/bin/serena-tray-window",
        DESKTOP_FILE,
        "usr/share/icons/hicolor/128x128/apps/serena-tray.png",
    ] {
        assert!(files.iter().any(|p| p == f), "{f} not in {files:?}");
    }

    // Installed (CI) or unpacked (anywhere else): the same files, checked the same way.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let unpacked = tempfile::tempdir().expect("tempdir");
    let (root, install) = if ci {
        (PathBuf::from("/"), Some(Installed::install(deb)))
    } else {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(unpacked.path()));
        (unpacked.path().to_owned(), None)
    };
    let bin = root.join("usr/bin/serena-tray");
    if install.is_some() {
        let found = which::which("serena-tray").expect("serena-tray on PATH");
        assert_eq!(found, bin, "the installed command comes first on PATH");
    }

    let version = text(&run(Command::new(&bin).arg("--version")));
    assert_eq!(
        version.trim(),
        format!("serena-tray {VERSION} ({})", commit())
    );

    // Its discovery, from the packaged binary: a (fake) Serena of this test's own.
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let mut list = Command::new(&bin);
    home.env(&mut list);
    let listed = wait_for("the fake in `list`", Duration::from_secs(20), || {
        let out = list
            .arg("--serena-home")
            .arg(home.serena_home())
            .args(["list", "--json"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .any(|i| i["pid"].as_u64() == Some(u64::from(fake)))
            .then_some(v)
    });
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // The desktop entry is valid, runs the installed command and names an icon that is there.
    let entry_path = root.join(DESKTOP_FILE);
    let validated = Command::new("desktop-file-validate")
        .arg(&entry_path)
        .output()
        .expect("desktop-file-validate (desktop-file-utils, installed by the test command)");
    assert!(
        validated.status.success() && validated.stdout.is_empty(),
        "{validated:?}"
    );
    let entry = std::fs::read_to_string(&entry_path).expect("the desktop entry");
    let key = |k: &str| {
        entry
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in\n{entry}"))
            .to_owned()
    };
    assert_eq!(key("Exec"), "serena-tray");
    assert_eq!(key("Name"), "Serena Tray");
    assert!(entry.contains("Exec=serena-tray --minimized"), "{entry}");
    let icon = root.join(format!(
        "usr/share/icons/hicolor/128x128/apps/{}.png",
        key("Icon")
    ));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&icon).unwrap_or_else(|e| panic!("{}: {e}", icon.display())),
    ));
    let info = decoder.read_info().expect("a PNG");
    assert_eq!((info.info().width, info.info().height), (128, 128));

    // The tray app from the packaged binary: in the tray, its API up.
    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let port = free_port();
    let mut app = Command::new(&bin);
    home.env(&mut app);
    desktop.env(&mut app);
    let log = std::fs::File::create(home.path().join("app.log")).expect("log");
    let child = app
        .arg("--minimized")
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the packaged serena-tray");
    let pid = reaper.adopt(child);
    let item = watcher.item(Duration::from_secs(30));
    assert!(!item.service.is_empty(), "{item:?}");
    let api = Daemon::attach_app(&home, port, pid);
    assert_eq!(api.call("GET", "/api/health", None).0, 200);
    // Stopped (with the fake) before the package goes.
    drop(api);
    drop(reaper);

    if let Some(install) = install {
        install.remove();
        assert!(!installed(), "serena-tray is still installed");
        let left: Vec<&String> = files
            .iter()
            .filter(|f| Path::new("/").join(f).exists())
            .collect();
        assert!(left.is_empty(), "left behind in /usr: {left:?}");
    }
}

#[test]
fn the_rpm_holds_the_same_files_and_requires_the_runtime_libraries() {
    let (_, rpm) = packages();
    let query = |args: &[&str]| text(&run(Command::new("rpm").arg("-qp").args(args).arg(rpm)));
    assert_eq!(
        query(&["--qf", "%{NAME} %{VERSION}"]),
        format!("serena-tray {VERSION}")
    );
    let requires = query(&["--requires"]);
    for lib in RPM_REQUIRES {
        assert!(
            requires.lines().any(|l| l.trim() == lib),
            "requires: {requires}"
        );
    }
    let files = query(&["--list"]);
    for f in [
        "/usr/bin/serena-tray",
        "/usr/bin/serena-tray-app",
        "/usr/bin/serena-tray-window",
        &format!("/{DESKTOP_FILE}"),
        "/usr/share/icons/hicolor/128x128/apps/serena-tray.png",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in\n{files}");
    }
}
