//! The check of the handshake cache at each Serena the bridge goes live on: Serena's real
//! answers, asked on an MCP session of the bridge's own, against the entry; a difference
//! replaces the entry and tells a client served from the old one which lists changed.
//!
//! Deliberately not here: answering from the cache (the bridge) and the file (`handshake`).

use super::{is_sse, Bridge};
use crate::launch::handshake::{self, Entry};
use crate::launch::share::sse::Events;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long after a (re)connection the check waits before it looks whether a call is in
/// flight.
const CHECK_AFTER: Duration = Duration::from_millis(100);

impl Bridge {
    /// Checks the cache at each Serena the bridge goes live on, once the client's calls in
    /// flight are answered: a Serena just started is slow, and the check must not hold back
    /// the call that woke it.
    pub(super) async fn check_each_serena(self: Arc<Self>) {
        let mut generations = self.generation.subscribe();
        while generations.changed().await.is_ok() {
            let generation = *generations.borrow_and_update();
            // The message that woke the session is sent right after the wake: let it start.
            tokio::time::sleep(CHECK_AFTER).await;
            let _ = self.busy.subscribe().wait_for(|busy| !*busy).await;
            self.check_cache().await;
            self.checked.send_replace(generation);
        }
    }

    /// Checks the cache against the current Serena's real answers, on an MCP session of its
    /// own: a difference replaces the entry, and a client served from the old one is told
    /// which lists changed (and so is the dashboard's timeline).
    async fn check_cache(&self) {
        let Some(initialize) = self.handshake.lock().await.first().cloned() else {
            return;
        };
        let url = self.now().await.url;
        let Some(real) = self.real_answers(&url, &initialize).await else {
            return;
        };
        if self.cache.load().as_ref() != Some(&real) {
            if let Err(e) = self.cache.store(&real) {
                tracing::warn!("cannot write {}: {e}", self.cache.path().display());
            }
        }
        let Some(served) = self.served.lock().await.replace(real.clone()) else {
            return;
        };
        let changed = served.changed_lists(&real);
        if changed.is_empty() {
            return;
        }
        for kind in &changed {
            let note =
                json!({"jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")});
            let _ = self.out.send(note.to_string());
        }
        let id = self.now().await.session_id;
        if let Some(id) = id {
            let path = format!("/api/sessions/{id}/handshake-replaced");
            let _ = self.dashboard.post(&path, &json!({"lists": changed})).await;
        }
    }

    /// Serena's answers to the client's `initialize` and to each list, on a new MCP session
    /// (closed after).
    async fn real_answers(&self, url: &str, initialize: &str) -> Option<Entry> {
        let mut init: Value = serde_json::from_str(initialize).ok()?;
        let asked = handshake::asked_version(&init)?.to_string();
        init["id"] = json!("serena-tray-check-0");
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init.to_string())
            .send()
            .await
            .ok()?;
        let session = resp
            .headers()
            .get("mcp-session-id")?
            .to_str()
            .ok()?
            .to_string();
        let first = read_answer(resp).await.0.into_iter().next()?;
        let initialize = without_id(&first)?;
        let protocol = initialize["result"]["protocolVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let send = |body: Value| {
            self.http
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", &protocol)
                .body(body.to_string())
                .send()
        };
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .ok()?;
        let mut lists = std::collections::BTreeMap::new();
        for (method, request) in handshake::check_requests() {
            let answer = read_answer(send(request).await.ok()?)
                .await
                .0
                .into_iter()
                .next()?;
            lists.insert(method.to_string(), without_id(&answer)?);
        }
        let _ = self
            .http
            .delete(url)
            .header("mcp-session-id", &session)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        Some(Entry {
            asked,
            initialize,
            lists,
        })
    }
}

/// The messages of an answer (a JSON body, or the events of an SSE stream) and whether it
/// came whole (false: cut off mid-stream).
async fn read_answer(mut resp: reqwest::Response) -> (Vec<String>, bool) {
    if !is_sse(&resp) {
        return match resp.bytes().await {
            Ok(body) => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                (
                    Some(text).filter(|t| !t.is_empty()).into_iter().collect(),
                    true,
                )
            }
            Err(_) => (Vec::new(), false),
        };
    }
    let mut events = Events::default();
    let mut messages = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => messages.extend(events.feed(&chunk)),
            Ok(None) => return (messages, true),
            Err(_) => return (messages, false),
        }
    }
}

/// A JSON-RPC response without its `id` and `jsonrpc` (what the cache keeps).
fn without_id(message: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(message).ok()?;
    let obj = v.as_object_mut()?;
    obj.remove("id");
    obj.remove("jsonrpc");
    Some(v)
}
