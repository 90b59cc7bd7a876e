//! Where the running program is: `$SERENA_HOME/tray/daemon.json` (`{"pid", "port",
//! "version", "started_at"}`, mode 0600, written atomically once the API listens, removed at a
//! clean shutdown), so the CLI verbs and `launch` find it on whatever port it runs, and the
//! optional `--port-file PATH` (the port alone, for scripts that start it with `--port 0`).
//! A record is only a hint: whoever reads it still checks that Serena Tray answers on that port
//! and that the recorded PID owns it ([`verified_pid`]) before trusting it with the token. Also
//! the [`Client`] of the running program's API, which finds it that way.
//!
//! Deliberately not here: starting (`app`, `background`), and what each caller asks of the API.

use crate::core::files;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a call to the running program's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon did not answer: {0}")]
    NoAnswer(#[source] reqwest::Error),
    /// An error answer: the daemon's own message (else its status).
    #[error("{message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("the daemon's answer is not what this serena-tray expects: {0}")]
    Answer(#[source] serde_json::Error),
}

/// `daemon.json`'s name in the tray directory.
pub const FILE_NAME: &str = "daemon.json";

/// What `daemon.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    pub port: u16,
    pub version: String,
    /// Epoch seconds.
    pub started_at: f64,
}

pub fn path(serena_home: &Path) -> PathBuf {
    serena_home.join("tray").join(FILE_NAME)
}

/// Records this process as the running program on `port`.
pub fn write(serena_home: &Path, port: u16) -> std::io::Result<()> {
    let record = Record {
        pid: std::process::id(),
        port,
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: crate::core::model::now(),
    };
    let mut text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    text.push(b'\n');
    files::write_atomic(&path(serena_home), &text)
}

/// The record, if there is a readable one.
pub fn read(serena_home: &Path) -> Option<Record> {
    let bytes = files::read(&path(serena_home)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes `file` if it still names this process (another start may have replaced it).
pub fn remove_if_ours(serena_home: &Path) {
    if read(serena_home).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(path(serena_home));
    }
}

/// Writes the port alone to `file` (`--port-file`), atomically and mode 0600; a missing
/// folder is created.
pub fn write_port_file(file: &Path, port: u16) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    files::write_atomic(file, format!("{port}\n").as_bytes())
}

/// A client of the running program's API (the CLI's verbs, `launch --share`): found by
/// `/api/health` on its port, authenticated with the token file; answers are read into the
/// core's own types where the caller looks inside them.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    port: u16,
}

impl Client {
    /// The running program of this Serena home: on the configured port (`--port`, else
    /// `web_dashboard_global_port`), else on the port its `daemon.json` records.
    pub async fn find(ctx: &crate::core::settings::Settings) -> Option<Client> {
        if let Some(c) = Client::connect(&ctx.serena_home, ctx.dashboard.port).await {
            return Some(c);
        }
        let recorded = read(&ctx.serena_home)?;
        if recorded.port == ctx.dashboard.port {
            return None;
        }
        Client::connect(&ctx.serena_home, recorded.port).await
    }

    /// The daemon on `port`, if Serena Tray answers there and its token is readable.
    pub async fn connect(serena_home: &Path, port: u16) -> Option<Client> {
        // Only a daemon that verifiably owns the port gets the token.
        verified_pid(port).await?;
        let token = crate::core::token::read(serena_home)?;
        let http = crate::core::http::loopback_client()
            // Launching a session waits for Serena to answer (up to the daemon's timeout).
            .timeout(Duration::from_secs(180))
            .build()
            .ok()?;
        Some(Client {
            http,
            base: format!("http://127.0.0.1:{port}"),
            token,
            port,
        })
    }

    pub fn login_url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// POST, and read the answer into the type the daemon wrote it from.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        serde_json::from_value(self.post(path, body).await?).map_err(ClientError::Answer)
    }

    /// GET, and read the answer into the type the daemon wrote it from.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        serde_json::from_value(self.get(path).await?).map_err(ClientError::Answer)
    }

    /// Asks the running app to show its dashboard window (`body` as `POST /api/window` takes
    /// it); false from a headless daemon, which has none.
    pub async fn show_window(&self, body: &impl Serialize) -> Result<bool, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/window", self.base))
            .json(body);
        match self.answer(req).await? {
            (status, _) if status.is_success() => Ok(true),
            (_, body) if body["error"]["code"] == "no_window" => Ok(false),
            (status, body) => Err(failure(status, &body)),
        }
    }

    async fn answer(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Value), ClientError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(ClientError::NoAnswer)?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        match self.answer(req).await? {
            (status, body) if status.is_success() => Ok(body),
            (status, body) => Err(failure(status, &body)),
        }
    }
}

/// An error answer: the daemon's message, else its status.
fn failure(status: reqwest::StatusCode, body: &Value) -> ClientError {
    let message = body["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("the daemon answered {status}"));
    ClientError::Refused { status, message }
}

/// The PID of the Serena Tray serving this port, if one does and that PID really owns the
/// listening socket. Before anything trusts an answer on the port (the CLI sending its token, a
/// start deciding not to start) it checks this: a process of another user squatting the port
/// can claim any PID in its answer, but cannot make that PID's sockets show up here (a user can
/// only read their own processes' sockets).
pub async fn verified_pid(port: u16) -> Option<u32> {
    let pid = health(port).await?["pid"].as_u64()? as u32;
    let owns = tokio::task::spawn_blocking(move || crate::core::sockets::pid_owns_port(pid, port))
        .await
        .unwrap_or(false);
    owns.then_some(pid)
}

async fn health(port: u16) -> Option<serde_json::Value> {
    let client = crate::core::http::loopback_client()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await
        .ok()?;
    resp.json::<serde_json::Value>()
        .await
        .ok()
        .filter(|v| v["app"] == "serena-tray")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_read_back_and_removed_only_by_its_own_process() {
        let home = tempfile::tempdir().expect("tempdir");
        files::private_dir(&home.path().join("tray")).expect("tray dir");
        assert_eq!(read(home.path()), None);
        write(home.path(), 25999).expect("write");
        let r = read(home.path()).expect("a record");
        assert_eq!((r.pid, r.port), (std::process::id(), 25999));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(home.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another process's record stays.
        let other = Record {
            pid: r.pid + 1,
            ..r.clone()
        };
        std::fs::write(path(home.path()), serde_json::to_vec(&other).expect("json"))
            .expect("write");
        remove_if_ours(home.path());
        assert_eq!(read(home.path()), Some(other));
        write(home.path(), 25999).expect("write");
        remove_if_ours(home.path());
        assert_eq!(read(home.path()), None);
        // Not JSON: no record.
        std::fs::write(path(home.path()), "{").expect("write");
        assert_eq!(read(home.path()), None);
    }
}
