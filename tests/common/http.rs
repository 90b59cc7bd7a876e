//! HTTP to loopback, for the tests and the benchmark: the one way they build a client
//! ([`builder`], never through a proxy, whatever the environment names: everything here talks
//! to 127.0.0.1), a free port, plain JSON requests, and MCP over streamable HTTP.

use super::block_on;
use serde_json::{json, Value};
use std::time::Duration;

/// A client builder that goes to the address asked, never through a proxy (the library's own,
/// `core::http::loopback_client`); add a timeout, a redirect policy, ... then build.
pub fn builder() -> reqwest::ClientBuilder {
    serena_tray::core::http::loopback_client()
}

/// A client of [`builder`] as it is (no timeout).
pub fn client() -> reqwest::Client {
    builder().build().expect("client")
}

/// A client of [`builder`] that gives up on a request after `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    builder().timeout(timeout).build().expect("client")
}

/// A free TCP port on loopback (bound and released: a race is possible but rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A plain JSON request to a loopback port (no token): (status, JSON body or Null).
pub fn json_request(method: &str, port: u16, path: &str, body: Option<Value>) -> (u16, Value) {
    json_request_with(method, port, path, body, &[])
}

/// [`json_request`] with extra headers.
pub fn json_request_with(
    method: &str,
    port: u16,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    block_on(async move {
        let mut req = client().request(method, &url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

/// The MCP `initialize` request (JSON-RPC id 1) a client named `client_name` sends first.
pub fn mcp_initialize(client_name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": client_name, "version": "1"}}})
}

/// One MCP JSON-RPC call over streamable HTTP; returns (session header, JSON reply or Null).
pub async fn mcp(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> (Option<String>, u16, Value) {
    let mut req = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .json(&body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-03-26");
    }
    let resp = req.send().await.expect("MCP request");
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().await.unwrap_or_default();
    // The reply is JSON or one server-sent event carrying it.
    let json = serde_json::from_str(&text).ok().or_else(|| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
    });
    (sid, status, json.unwrap_or(Value::Null))
}

/// The names of the tools the MCP server at `url` (streamable HTTP) lists, after the handshake.
pub fn tools_over_mcp(url: &str) -> Vec<String> {
    block_on(async {
        let client = client_with_timeout(Duration::from_secs(60));
        let (sid, status, init) = mcp(&client, url, None, mcp_initialize("serena-tray-test")).await;
        assert_eq!(status, 200, "{init:?}");
        assert!(init["result"]["serverInfo"].is_object(), "{init:?}");
        let sid = sid.expect("mcp-session-id");
        let (_, status, _) = mcp(
            &client,
            url,
            Some(&sid),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(status, 202);
        let (_, status, list) = mcp(
            &client,
            url,
            Some(&sid),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 200, "{list:?}");
        list["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .collect()
    })
}
