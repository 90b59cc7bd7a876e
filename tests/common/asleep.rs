//! Asleep shared sessions planted before a daemon or app starts: `$SERENA_HOME/tray/sessions.json`
//! records (the data contract of issue 31: a shared session with clients and no Serena), and
//! stand-ins for the `launch --share` bridges they name, processes of the test's own that live
//! until killed (an attachment whose process is gone is detached at once).

use super::processes::{snapshot, Reaper};
use super::{fake, wait_for, Home};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A stand-in bridge (the fake's `fake-language-server`, which sleeps): its PID and start time,
/// as an attachment names them.
pub fn bridge(home: &Home, reaper: &mut Reaper) -> (u32, u64) {
    let mut cmd = Command::new(fake::exe());
    home.env(&mut cmd);
    let pid = reaper.adopt(
        cmd.arg("fake-language-server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a stand-in bridge"),
    );
    let start = wait_for("its start time", Duration::from_secs(10), || {
        snapshot().get(pid).map(|p| p.start_time)
    });
    (pid, start)
}

/// An attachment of the bridge `(pid, start)` for the client `name` (PID: the bridge's own),
/// attached at `since`.
pub fn attachment((pid, start): (u32, u64), name: &str, since: f64) -> Value {
    json!({"pid": pid, "start_time": start, "client_pid": pid, "client_name": name,
           "since": since})
}

/// An asleep shared session on `project` since `since` (`reason`: `unused`, after 15 minutes
/// without a call, or `not_started`, on demand), having given back `given_back` bytes.
pub fn asleep_record(
    id: &str,
    project: &Path,
    reason: &str,
    since: f64,
    given_back: Option<u64>,
    attached: Vec<Value>,
) -> Value {
    json!({
        "session_id": id,
        "host": "127.0.0.1",
        "port": 0,
        "url": "",
        "pid": 0,
        "start_time": 0,
        "dashboard_url": null,
        "dashboard_port": null,
        "project_path": project.to_str().expect("utf8"),
        "context": null,
        "modes": [],
        "transport": "streamable-http",
        "created_at": since - 600.0,
        "log_path": project.join(format!("{id}.log")).to_str().expect("utf8"),
        "shared": true,
        "attached": attached,
        "on_demand": reason == "not_started",
        "sleep_minutes": 15,
        "last_used": if reason == "unused" { json!(since - 900.0) } else { Value::Null },
        "asleep_since": since,
        "asleep_reason": reason,
        "given_back_bytes": given_back,
    })
}

/// Writes `sessions` as `$SERENA_HOME/tray/sessions.json` (before the daemon starts).
pub fn plant_sessions(home: &Home, sessions: &[Value]) {
    let tray = home.serena_home().join("tray");
    std::fs::create_dir_all(&tray).expect("mkdir");
    let text = serde_json::to_string_pretty(sessions).expect("json");
    std::fs::write(tray.join("sessions.json"), text).expect("sessions.json");
}

/// Now, in epoch seconds.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
