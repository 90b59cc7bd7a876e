//! Talking to a Serena instance's own dashboard (Flask, on 127.0.0.1): is it alive, which project
//! is active, how far its log has moved, what its configuration says. Every call has a short
//! timeout so that one hung dashboard never stalls the rest. Read-only but for one call,
//! [`Prober::shutdown`], which only the reaper uses (deciding to stop an instance is its business).

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// What a dashboard probe can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("dashboard on port {port} did not answer: {source}")]
    Http {
        port: u16,
        #[source]
        source: reqwest::Error,
    },
    #[error("dashboard on port {port} answered {status}")]
    Status { port: u16, status: u16 },
    #[error("port {port} does not serve a Serena dashboard")]
    NotADashboard { port: u16 },
    /// An application error, which Serena answers as HTTP 200 `{"status":"error","message"}`.
    #[error("{message}")]
    Reported { port: u16, message: String },
}

pub type Result<T> = std::result::Result<T, ProbeError>;

/// The cheap per-tick status: `/get_log_messages` with a start index past the end returns no
/// messages, only the log's high-water mark and the active project.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogStatus {
    pub max_idx: i64,
    pub active_project: Option<String>,
}

/// The parts of `/get_config_overview` the model keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigSummary {
    pub project_name: Option<String>,
    pub project_path: Option<String>,
    pub context: Option<String>,
    pub modes: Vec<String>,
}

impl ConfigSummary {
    pub fn from_overview(v: &Value) -> ConfigSummary {
        let s = |v: &Value| v.as_str().map(String::from);
        let ap = &v["active_project"];
        ConfigSummary {
            project_name: s(&ap["name"]),
            project_path: s(&ap["path"]),
            context: s(&v["context"]["name"]),
            modes: v["modes"]
                .as_array()
                .map(|ms| ms.iter().filter_map(|m| s(&m["name"])).collect())
                .unwrap_or_default(),
        }
    }
}

/// A start index no log reaches: asks for the status without the messages.
const PAST_THE_END: i64 = 1 << 40;

/// HTTP client for dashboards. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Prober {
    http: reqwest::Client,
    timeout: Duration,
}

impl Prober {
    pub fn new(timeout: Duration) -> Prober {
        let http = crate::core::http::loopback_client()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Prober { http, timeout }
    }

    fn url(port: u16, route: &str) -> String {
        format!("http://127.0.0.1:{port}{route}")
    }

    async fn json(&self, port: u16, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|source| ProbeError::Http { port, source })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ProbeError::Status {
                port,
                status: status.as_u16(),
            });
        }
        resp.json::<Value>()
            .await
            .map_err(|_| ProbeError::NotADashboard { port })
    }

    /// GET an allow-listed dashboard route as JSON (callers pass only fixed routes).
    pub async fn get_json(&self, port: u16, route: &'static str) -> Result<Value> {
        self.json(port, self.http.get(Self::url(port, route))).await
    }

    /// POST a JSON body to an allow-listed dashboard route.
    pub async fn post_json(&self, port: u16, route: &'static str, body: &Value) -> Result<Value> {
        self.json(port, self.http.post(Self::url(port, route)).json(body))
            .await
    }

    /// GET `/heartbeat`: `Ok(())` only for Serena's `{"status":"alive"}`.
    pub async fn heartbeat(&self, port: u16) -> Result<()> {
        let v = self
            .json(port, self.http.get(Self::url(port, "/heartbeat")))
            .await?;
        if v["status"] == "alive" {
            Ok(())
        } else {
            Err(ProbeError::NotADashboard { port })
        }
    }

    /// POST `/get_log_messages` past the end: log high-water mark and active project.
    pub async fn log_status(&self, port: u16) -> Result<LogStatus> {
        let req = self
            .http
            .post(Self::url(port, "/get_log_messages"))
            .json(&serde_json::json!({ "start_idx": PAST_THE_END }));
        let v = self.json(port, req).await?;
        serde_json::from_value(v).map_err(|_| ProbeError::NotADashboard { port })
    }

    /// GET `/get_config_overview` (Serena answers 500 very early in its start-up).
    pub async fn config_overview(&self, port: u16) -> Result<ConfigSummary> {
        let v = self
            .json(port, self.http.get(Self::url(port, "/get_config_overview")))
            .await?;
        if v.get("active_project").is_none() {
            return Err(ProbeError::NotADashboard { port });
        }
        Ok(ConfigSummary::from_overview(&v))
    }

    /// PUT `/shutdown`: asks the instance to exit. A stdio Serena exits without answering, so a
    /// connection closed without a reply is `Ok` too; a failed connection or a timeout is not.
    pub async fn shutdown(&self, port: u16) -> Result<()> {
        let sent = self
            .http
            .put(Self::url(port, "/shutdown"))
            .timeout(self.timeout)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(ProbeError::Status {
                port,
                status: resp.status().as_u16(),
            }),
            Err(source) if source.is_connect() || source.is_timeout() => {
                Err(ProbeError::Http { port, source })
            }
            // The request went out and the connection closed before an answer.
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_from_overview() {
        let v = serde_json::json!({
            "active_project": {"name": "demo", "path": "/w/demo", "language": "python"},
            "context": {"name": "ide", "description": ""},
            "modes": [{"name": "editing"}, {"name": "interactive"}, {"nope": 1}],
        });
        let s = ConfigSummary::from_overview(&v);
        assert_eq!(s.project_name.as_deref(), Some("demo"));
        assert_eq!(s.project_path.as_deref(), Some("/w/demo"));
        assert_eq!(s.context.as_deref(), Some("ide"));
        assert_eq!(s.modes, vec!["editing", "interactive"]);
        let empty = ConfigSummary::from_overview(&serde_json::json!({"active_project": null}));
        assert_eq!(empty, ConfigSummary::default());
    }
}
