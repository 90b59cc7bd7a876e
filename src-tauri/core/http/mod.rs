//! What both HTTP servers (the API and Serena's tray-protocol receiver) and every HTTP client of
//! this program share: serving a router with bounded connections (`serve`), the one error type
//! and its JSON form (`error`), the body limit, the `Host` values that name a loopback server, and
//! a client builder that never goes through a proxy.
//!
//! Deliberately not here: routes, the API's token and the tray protocol's checks (each server's
//! own module), and anything of the program's state: this module imports nothing of the crate.

pub mod error;
pub mod serve;

pub use error::{ApiError, ApiJson};

/// Largest request body accepted (DESIGN: 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The `Host` values that name a server on 127.0.0.1:`port` (anything else may be DNS
/// rebinding).
pub fn allowed_hosts(port: u16) -> [String; 2] {
    [format!("127.0.0.1:{port}"), format!("localhost:{port}")]
}

/// A client for servers on loopback (dashboards, the daemon, a shared session): a user's HTTP
/// proxy must never see these calls. Each caller adds its own timeouts.
pub fn loopback_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy()
}
