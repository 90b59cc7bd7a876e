//! A `serena-tray daemon` as a process of the test's own ([`Daemon`], started from a [`Home`]
//! and killed when dropped; or a handle on an app or daemon started some other way), its
//! authorised API calls, and its server-sent events (`/api/events`) on a channel.

use super::http::{self, free_port};
use super::instances::start_gate;
use super::{block_on, poll, tray_exe, wait_for, Home};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `serena-tray daemon` process on its own ports, killed at the end of the test.
pub struct Daemon {
    pub port: u16,
    pub tray_port: u16,
    pub token: String,
    pub pid: u32,
    child: Option<Child>,
}

impl Home {
    /// Starts `serena-tray daemon` on free ports and waits until it answers.
    pub fn daemon(&self) -> Daemon {
        self.daemon_on(free_port(), free_port())
    }

    pub fn daemon_on(&self, port: u16, tray_port: u16) -> Daemon {
        self.daemon_with(port, tray_port, &[])
    }

    /// A daemon with extra environment (inherited by the sessions it launches).
    pub fn daemon_with(&self, port: u16, tray_port: u16, env: &[(&str, &str)]) -> Daemon {
        self.daemon_with_args(port, tray_port, env, &[])
    }

    /// A daemon on free ports with extra arguments (`--idle-shutdown-minutes 0.2`).
    pub fn daemon_args(&self, args: &[&str]) -> Daemon {
        self.daemon_with_args(free_port(), free_port(), &[], args)
    }

    fn daemon_with_args(
        &self,
        port: u16,
        tray_port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let mut d = self.daemon_answering(port, tray_port, env, args);
        d.token = std::fs::read_to_string(self.serena_home().join("tray/token"))
            .expect("token file")
            .trim()
            .to_string();
        d
    }

    /// A daemon on free ports once it answers, without reading its token (it may not be on
    /// disk: a first start on a full disk); `token` is empty.
    pub fn daemon_without_token(&self) -> Daemon {
        self.daemon_answering(free_port(), free_port(), &[], &[])
    }

    fn daemon_answering(
        &self,
        port: u16,
        tray_port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let mut cmd = Command::new(tray_exe());
        self.env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(self.daemon_log(port)).expect("daemon log");
        let child = cmd
            .arg("--serena-home")
            .arg(self.serena_home())
            .args(["daemon", "--port", &port.to_string()])
            .args(["--tray-protocol-port", &tray_port.to_string()])
            .args(args)
            .env("SERENA_TRAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let pid = child.id();
        let d = Daemon {
            port,
            tray_port,
            token: String::new(),
            pid,
            child: Some(child),
        };
        wait_for("the daemon to answer", Duration::from_secs(30), || {
            (d.call("GET", "/api/health", None).0 == 200).then_some(())
        });
        d
    }
}

impl Daemon {
    /// A handle on the app `pid` of `home` started some other way (not owned: not killed on
    /// drop), once its API answers on `port`, with its token.
    pub fn attach_app(home: &Home, port: u16, pid: u32) -> Daemon {
        let mut d = Daemon::attach(port, pid);
        wait_for("the app's API to answer", Duration::from_secs(60), || {
            (d.raw("GET", "/api/health", None, &[]).0 == 200).then_some(())
        });
        d.token = std::fs::read_to_string(home.serena_home().join("tray/token"))
            .expect("token file")
            .trim()
            .to_string();
        d
    }

    /// A handle on a daemon started some other way (not owned: not killed on drop).
    pub fn attach(port: u16, pid: u32) -> Daemon {
        Daemon {
            port,
            tray_port: 0,
            token: String::new(),
            pid,
            child: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `POST /request-session` with this body, holding the start gate (see [`START_GATE`]):
    /// the daemon answers once the session's Serena has its dashboard.
    pub fn request_session(&self, body: Value) -> (u16, Value) {
        let _gate = start_gate();
        self.call("POST", "/request-session", Some(body))
    }

    /// An authorised call: (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut headers = vec![];
        let auth = format!("Bearer {}", self.token);
        if !self.token.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        self.raw(method, path, body.map(|b| b.to_string()), &headers)
    }

    /// [`Daemon::call`] for a call the daemon may be killed in the middle of: a connection that
    /// breaks, like one refused, is status 0.
    pub fn call_cut(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let headers = [("authorization", auth.as_str())];
        self.send(method, path, body.map(|b| b.to_string()), &headers, true)
    }

    /// A call with exactly these headers and this raw body (JSON content type if a body).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.send(method, path, body, headers, false)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
        cut: bool,
    ) -> (u16, Value) {
        let url = self.url(path);
        block_on(async {
            let client = http::client_with_timeout(Duration::from_secs(200));
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = client.request(method, &url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
                }
                // Not listening (yet), or (`cut`) killed meanwhile: status 0.
                Err(e) if e.is_connect() || cut => (0, Value::Null),
                Err(e) => panic!("{url}: {e}"),
            }
        })
    }

    /// Stops it with SIGTERM and waits; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let exited = poll(Duration::from_millis(100), Duration::from_secs(15), || {
            child.try_wait().ok().flatten()
        });
        if exited.is_some() {
            return exited;
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The events of a daemon's `/api/events`, each with the instant it arrived, on a channel.
pub fn events(d: &Daemon) -> std::sync::mpsc::Receiver<(Instant, Value)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (open_tx, open) = std::sync::mpsc::channel();
    let url = d.url("/api/events");
    let auth = format!("Bearer {}", d.token);
    std::thread::spawn(move || {
        block_on(async move {
            let request = http::client().get(&url).header("authorization", auth);
            let Ok(mut resp) = request.send().await else {
                return;
            };
            let _ = open_tx.send(());
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let at = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if let Ok(v) = serde_json::from_str::<Value>(&data) {
                        if tx.send((at, v)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    });
    open.recv_timeout(Duration::from_secs(10))
        .expect("the event stream to open");
    rx
}

/// Waits for the first event `f` accepts: when it arrived, and its data.
pub fn next_event(
    rx: &std::sync::mpsc::Receiver<(Instant, Value)>,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Option<(Instant, Value)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok((at, v)) if f(&v) => return Some((at, v)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Waits for the first event `f` accepts; its arrival instant.
pub fn wait_event(
    rx: &std::sync::mpsc::Receiver<(Instant, Value)>,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Option<Instant> {
    next_event(rx, timeout, f).map(|(at, _)| at)
}
