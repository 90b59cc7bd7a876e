//! The test's own world: where the repository, the test venv's real Serena and the
//! `serena-tray` binaries are, and [`Home`], a temporary HOME with its own `SERENA_HOME` and
//! discovery scope: the environment every child gets, its settings and core, the CLI run on
//! it, and the kill of everything still carrying its scope when it is dropped.

use super::processes::kill_one;
use serde_json::Value;
use serena_tray::core::procs::{Scope, Snapshot, Sys, SCOPE_VAR};
use serena_tray::core::{Core, Settings};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with serena-agent 2.1.0 and jedi-language-server that the test command creates.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("SERENA_TRAY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".test-env/venv"));
    assert!(
        dir.join("bin/serena").exists(),
        "no Serena venv at {} (the README's test command creates it; or set SERENA_TRAY_TEST_VENV)",
        dir.display()
    );
    dir
}

pub fn serena_exe() -> PathBuf {
    venv().join("bin/serena")
}

/// Real Serena's MCP server over stdio on `project`, no browser opened: `serena` and its
/// arguments.
pub fn serena_mcp<'a>(serena: &'a str, project: &'a str) -> [&'a str; 6] {
    [
        serena,
        "start-mcp-server",
        "--project",
        project,
        "--open-web-dashboard",
        "False",
    ]
}

/// The `serena-tray` binary cargo built with this test or bench (it sets `CARGO_BIN_EXE_*` for
/// both, the only programs that include this module).
pub fn tray_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serena-tray"))
}

/// The tray app binary (`serena-tray` hands over to it when there is a display).
pub fn tray_app_exe() -> PathBuf {
    tray_exe().with_file_name("serena-tray-app")
}

/// A temporary HOME with its own `.serena`, and the discovery scope of one test: every process
/// started through [`Home::env`] carries the scope's marker, and every core and daemon of this
/// home sees only those, so a test never sees (or signals) a process it did not start.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::Builder::new()
                .prefix("serena-tray-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// This test's discovery scope marker (unique per home).
    pub fn scope(&self) -> String {
        self.path().display().to_string()
    }

    pub fn serena_home(&self) -> PathBuf {
        self.path().join(".serena")
    }

    pub fn registry_path(&self) -> PathBuf {
        self.serena_home().join("instances.json")
    }

    /// The hermetic environment for a child: no network look-ups, no browser, no usage reports,
    /// and the venv first on PATH (Serena starts `jedi-language-server` by name, as an activated
    /// venv would provide it).
    pub fn env(&self, cmd: &mut Command) {
        let mut path = vec![venv().join("bin")];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        cmd.env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("HOME", self.path())
            .env("SERENA_HOME", self.serena_home())
            .env(SCOPE_VAR, self.scope())
            .env("SERENA_USAGE_REPORTING", "false")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
    }

    /// Where the daemon on `port` writes its stdout and stderr.
    pub fn daemon_log(&self, port: u16) -> PathBuf {
        self.path().join(format!("daemon-{port}.log"))
    }

    /// Writes `$SERENA_HOME/tray/config.toml`.
    pub fn tray_config(&self, text: &str) {
        let tray = self.serena_home().join("tray");
        std::fs::create_dir_all(&tray).expect("mkdir");
        std::fs::write(tray.join("config.toml"), text).expect("config.toml");
    }

    /// A small Python project registered with the offline jedi language server.
    pub fn jedi_project(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("app.py"), "def hello():\n    return 1\n").expect("write");
        let mut cmd = Command::new(serena_exe());
        self.env(&mut cmd);
        let out = cmd
            .args(["project", "create", "--ls", "python_jedi"])
            .arg(&dir)
            .output()
            .expect("serena project create");
        assert!(
            out.status.success(),
            "serena project create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// Settings for an in-process core or app on this home: its scope, short probes, any free
    /// ports, no settings file read.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::defaults(self.serena_home());
        s.scope = Scope::Marked(self.scope());
        s.tray.probe_timeout = Duration::from_millis(700);
        s.dashboard.port = 0;
        s.tray.tray_protocol_port = 0;
        s
    }

    /// A core on this home with the given grace.
    pub fn core(&self, grace_secs: f64) -> Core {
        let mut s = self.settings();
        s.tray.zombie_grace = Duration::from_secs_f64(grace_secs);
        Core::new(s)
    }

    /// Runs `serena-tray --serena-home <home> ARGS`.
    pub fn tray(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(tray_exe());
        self.env(&mut cmd);
        cmd.arg("--serena-home")
            .arg(self.serena_home())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run serena-tray")
    }

    /// `serena-tray list --json`, parsed.
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.tray(&["list", "--json"]);
        assert!(
            out.status.success(),
            "list --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("list --json prints JSON")
    }

    /// The processes running now that carry this home's scope marker: everything its test
    /// started, and what those started (language servers, orphans, a daemon's sessions).
    pub fn scoped_pids(&self) -> Vec<u32> {
        let mut sys = Sys::new();
        let snap = Snapshot::capture(&mut sys);
        let pids: Vec<u32> = snap.iter().map(|p| p.pid).collect();
        Scope::Marked(self.scope())
            .admitted(&mut sys, &pids)
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    pub fn registry(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.registry_path()).expect("registry");
        serde_json::from_str(&text).expect("registry JSON")
    }
}

impl Drop for Home {
    /// The last line of defence, pass or fail: every process still carrying this home's scope
    /// marker (anything a test started, and what that started: sessions a daemon launched,
    /// orphans) is killed. Nothing else carries it.
    fn drop(&mut self) {
        for pid in self.scoped_pids() {
            kill_one(pid);
        }
    }
}

/// A home whose tray config points at the test venv's Serena.
pub fn home_with_serena() -> Home {
    let home = Home::new();
    home.tray_config(&format!(
        "serena_command = [{:?}]\n",
        serena_exe().to_str().expect("utf8")
    ));
    home
}

/// The `list --json` object for `pid` (the live one, if a dead record shares the PID).
pub fn find_pid(list: &[Value], pid: u32) -> Option<Value> {
    let mut rows = list.iter().filter(|v| v["pid"] == pid);
    let first = rows.next()?.clone();
    Some(
        rows.find(|v| v["state_reason"] != "dead")
            .cloned()
            .filter(|_| first["state_reason"] == "dead")
            .unwrap_or(first),
    )
}
