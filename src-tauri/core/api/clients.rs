//! The page's Clients view: the MCP client configs of the user running Serena Tray, their
//! Serena entries, and routing them through `serena-tray launch` or back (`core::configure`,
//! as `serena-tray configure` does for the user's files; a project's own files are for the
//! command, run in the project).

use crate::core::configure::{self, Change, Client, FileReport, Wrapping};
use crate::core::http::{ApiError, ApiJson};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// What `POST /api/clients/apply` and `/undo` may be told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// Only these clients' files (all when missing or empty).
    #[serde(default)]
    clients: Vec<String>,
    /// Wrap with `launch --share`.
    #[serde(default)]
    share: bool,
}

/// What `GET /api/clients` may be told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The diffs of wrapping with `launch --share` (what `apply` with `share` writes).
    #[serde(default)]
    share: bool,
}

fn clients(names: &[String]) -> Result<Vec<Client>, ApiError> {
    names
        .iter()
        .map(|n| {
            Client::parse(n).ok_or_else(|| {
                ApiError::bad_request("unknown_client", format!("unknown client {n:?}"))
            })
        })
        .collect()
}

async fn plan(
    clients: Vec<Client>,
    change: Change,
    share: bool,
) -> Result<(Vec<FileReport>, Wrapping, Option<String>), ApiError> {
    let (wrapping, warning) = Wrapping::installed(share, None);
    let w = wrapping.clone();
    let reports =
        tokio::task::spawn_blocking(move || configure::plan_all(&clients, None, Some(change), &w))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no_home", e.to_string())
            })?;
    Ok((reports, wrapping, warning))
}

fn file_json(r: &FileReport) -> Value {
    let mut v = json!(r);
    v["diff"] = json!(r.changed.is_some().then(|| r.diff()));
    v
}

/// `GET /api/clients[?share=true]`: each config file found, its Serena entries, and the diff
/// routing them through `launch` (`launch --share`) would make.
pub async fn list(Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let (reports, wrapping, warning) = plan(Vec::new(), Change::Wrap, q.share).await?;
    Ok(Json(json!({
        "program": wrapping.program,
        "warning": warning,
        "files": reports.iter().map(file_json).collect::<Vec<_>>(),
    })))
}

/// Writes each planned change; per file: its path, whether it changed, the backup or the error.
async fn write_all(reports: Vec<FileReport>) -> Result<Value, ApiError> {
    let done = tokio::task::spawn_blocking(move || {
        reports
            .iter()
            .filter(|r| r.changed.is_some() || r.error.is_some())
            .map(|r| {
                let (backup, error) = match &r.error {
                    Some(e) => (None, Some(e.clone())),
                    None => match configure::write(r) {
                        Ok(b) => (b, None),
                        Err(e) => (None, Some(e.to_string())),
                    },
                };
                json!({
                    "client": r.file.client,
                    "scope": r.file.scope,
                    "path": r.file.path,
                    "changed": backup.is_some(),
                    "backup": backup,
                    "error": error,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(json!({ "files": done }))
}

/// `POST /api/clients/apply`: routes the Serena entries through `launch` (a backup beside each
/// file first).
pub async fn apply(ApiJson(body): ApiJson<ChangeBody>) -> Result<Json<Value>, ApiError> {
    let (reports, _, _) = plan(clients(&body.clients)?, Change::Wrap, body.share).await?;
    Ok(Json(write_all(reports).await?))
}

/// `POST /api/clients/undo`: routes them back to running Serena directly.
pub async fn undo(ApiJson(body): ApiJson<ChangeBody>) -> Result<Json<Value>, ApiError> {
    if body.share {
        return Err(ApiError::bad_request(
            "bad_value",
            "share is for apply: undo takes only clients",
        ));
    }
    let (reports, _, _) = plan(clients(&body.clients)?, Change::Unwrap, false).await?;
    Ok(Json(write_all(reports).await?))
}
