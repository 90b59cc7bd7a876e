//! What the dashboard shows inside an instance's tab, fetched from that instance's own dashboard:
//! the eight sections (Current Configuration, Tool Usage, Executions Queue, Last Execution,
//! Registered Projects, Available Tools, Available Modes, Available Contexts) and its logs.
//!
//! This is the only proxy to instance dashboards, and it is closed: it reaches only the dashboard
//! port of an instance the core knows (on 127.0.0.1) and only the fixed routes below, so no
//! request can make it fetch anything else (no SSRF). The one call that changes something is
//! cancelling a task of the instance's Executions Queue. Each upstream call has its own short
//! timeout; a failed one becomes that section's error, never a failed page.

use crate::core::probe::{self, ProbeError, Prober};
use futures::future::join4;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// One section: its data, or why it is missing.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Section {
    Ok { ok: bool, data: Value },
    Err { ok: bool, error: String },
}

impl Section {
    fn ok(data: Value) -> Section {
        Section::Ok { ok: true, data }
    }
    fn err(error: impl Into<String>) -> Section {
        Section::Err {
            ok: false,
            error: error.into(),
        }
    }
}

/// The section names, in the order the dashboard shows them.
pub const SECTIONS: [&str; 8] = [
    "current_configuration",
    "tool_usage",
    "executions_queue",
    "last_execution",
    "registered_projects",
    "available_tools",
    "available_modes",
    "available_contexts",
];

fn pick(config: &probe::Result<Value>, keys: &[&str]) -> Section {
    match config {
        Ok(v) => {
            let mut out = Map::new();
            for k in keys {
                out.insert((*k).to_string(), v.get(*k).cloned().unwrap_or(Value::Null));
            }
            Section::ok(Value::Object(out))
        }
        Err(e) => Section::err(e.to_string()),
    }
}

/// Serena answers application errors as HTTP 200 `{"status":"error","message":...}`.
fn unwrap_app_error(port: u16, v: probe::Result<Value>) -> probe::Result<Value> {
    match v {
        Ok(v) if v.get("status").and_then(Value::as_str) == Some("error") => {
            Err(ProbeError::Reported {
                port,
                message: v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the dashboard reported an error")
                    .to_string(),
            })
        }
        other => other,
    }
}

/// The eight sections of the instance whose dashboard is on `port`, fetched concurrently.
pub async fn sections(prober: &Prober, port: u16) -> Map<String, Value> {
    let get = |route: &'static str| async move {
        unwrap_app_error(port, prober.get_json(port, route).await)
    };
    let (config, stats, queue, last) = join4(
        get("/get_config_overview"),
        get("/get_tool_stats"),
        get("/queued_task_executions"),
        get("/last_execution"),
    )
    .await;
    let as_section = |r: probe::Result<Value>| match r {
        Ok(v) => Section::ok(v),
        Err(e) => Section::err(e.to_string()),
    };
    let current = match &config {
        Ok(v) => {
            let mut v = v.clone();
            // The other sections carry these; keep the configuration readable.
            if let Some(o) = v.as_object_mut() {
                for k in [
                    "registered_projects",
                    "available_tools",
                    "available_modes",
                    "available_contexts",
                ] {
                    o.remove(k);
                }
            }
            Section::ok(v)
        }
        Err(e) => Section::err(e.to_string()),
    };
    let values = [
        current,
        as_section(stats),
        as_section(queue),
        as_section(last),
        pick(&config, &["registered_projects"]),
        pick(&config, &["active_tools", "available_tools"]),
        pick(&config, &["modes", "available_modes"]),
        pick(&config, &["context", "available_contexts"]),
    ];
    SECTIONS
        .iter()
        .zip(values)
        .map(|(k, s)| {
            (
                (*k).to_string(),
                serde_json::to_value(s).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Log messages from index `since` on: `{messages, max_idx, active_project}`.
pub async fn logs(prober: &Prober, port: u16, since: i64) -> probe::Result<Value> {
    let body = json!({ "start_idx": since });
    unwrap_app_error(
        port,
        prober.post_json(port, "/get_log_messages", &body).await,
    )
}

/// Asks the instance to cancel the task `task_id` of its Executions Queue:
/// `{"status":"success","was_cancelled":bool,"message"?}` (not cancelled: it had finished, or
/// never existed). An application error from the dashboard is an `Err`, as a failed call is.
///
/// The ID goes as a decimal string: Serena validates it as an int (pydantic, lax, so the string
/// is the same int), but 2.1.0's "not found" reply runs `html.escape` on the raw value, which
/// fails for a JSON number and turns a plain "already finished" into an error.
pub async fn cancel_execution(prober: &Prober, port: u16, task_id: u64) -> probe::Result<Value> {
    let body = json!({ "task_id": task_id.to_string() });
    unwrap_app_error(
        port,
        prober
            .post_json(port, "/cancel_task_execution", &body)
            .await,
    )
}
