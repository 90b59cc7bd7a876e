//! Helpers shared by the integration tests and the system benchmark (benches/system includes
//! this module by path), one module a subject; what most tests use is re-exported here, so that
//! `use common::*;` brings it in:
//! - `home`: the repository, the test venv's Serena, the binaries, and [`Home`], a temporary
//!   HOME and discovery scope whose processes are all killed when it is dropped;
//! - `instances`: real and fake Serena instances (and their stand-in clients) as processes;
//! - `daemon`: `serena-tray daemon` as a process, its API and its event stream;
//! - `processes`: process trees, killing, [`Reaper`], memory and CPU of a process;
//! - `sockets`: what a process listens on, the kernel's TCP tables;
//! - `http`: the one no-proxy HTTP client, JSON requests, MCP over streamable HTTP;
//! - `stats`: medians and percentiles; `wait`: waiting for a condition; `skip`: a test that
//!   cannot run here;
//! - not re-exported: `asleep` (asleep shared sessions planted in `sessions.json`), `fake` (the
//!   fake Serena's binary and commands), `mcp` (MCP over stdio), `share` (`launch --share`
//!   clients), `desktop` (Xvfb, a session bus, a tray host and a notification server),
//!   `browser` (headless Chromium or the app's WebKit window over WebDriver).
// Each test binary compiles all of it and uses a part.
#![allow(dead_code, unused_imports)]

pub mod asleep;
pub mod browser;
pub mod daemon;
pub mod desktop;
pub mod disk;
pub mod fake;
pub mod home;
pub mod http;
pub mod instances;
pub mod mcp;
pub mod processes;
pub mod share;
pub mod skip;
pub mod sockets;
pub mod stats;
pub mod wait;

pub use daemon::*;
pub use home::*;
pub use http::{free_port, json_request, json_request_with, mcp, tools_over_mcp};
pub use instances::*;
pub use processes::*;
pub use skip::skip_unless_ci;
pub use stats::*;
pub use wait::*;
