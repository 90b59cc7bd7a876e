//! A small client of the running daemon's API for the CLI verbs: finds it by `/api/health` on
//! its port, authenticates with the token file, reads answers into the core's own types where
//! the CLI looks inside them, and turns `{"error":{...}}` answers into one clear line.

use super::CliError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    port: u16,
}

impl Client {
    /// The running program of this Serena home: on the configured port (`--port`, else
    /// `web_dashboard_global_port`), else on the port its `daemon.json` records.
    pub async fn find(ctx: &crate::core::Settings) -> Option<Client> {
        if let Some(c) = Client::connect(&ctx.serena_home, ctx.dashboard.port).await {
            return Some(c);
        }
        let recorded = crate::core::running::read(&ctx.serena_home)?;
        if recorded.port == ctx.dashboard.port {
            return None;
        }
        Client::connect(&ctx.serena_home, recorded.port).await
    }

    /// The daemon on `port`, if Serena Tray answers there and its token is readable.
    pub async fn connect(serena_home: &Path, port: u16) -> Option<Client> {
        // Only a daemon that verifiably owns the port gets the token.
        crate::core::app::verified_pid(port).await?;
        let token = crate::core::token::read(serena_home)?;
        let http = reqwest::Client::builder()
            .no_proxy()
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

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// POST, and read the answer into the type the daemon wrote it from.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        serde_json::from_value(self.post(path, body).await?).map_err(CliError::Answer)
    }

    /// GET, and read the answer into the type the daemon wrote it from.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        serde_json::from_value(self.get(path).await?).map_err(CliError::Answer)
    }

    /// Asks the running app to show its dashboard window (`body` as `POST /api/window` takes
    /// it); false from a headless daemon, which has none.
    pub async fn show_window(&self, body: &impl Serialize) -> Result<bool, CliError> {
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
    ) -> Result<(reqwest::StatusCode, Value), CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Other(format!("the daemon did not answer: {e}")))?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        match self.answer(req).await? {
            (status, body) if status.is_success() => Ok(body),
            (status, body) => Err(failure(status, &body)),
        }
    }
}

/// An error answer as one line: the daemon's message, else its status.
fn failure(status: reqwest::StatusCode, body: &Value) -> CliError {
    let message = body["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("the daemon answered {status}"));
    CliError::Other(message)
}
