//! Serena Tray: one tray icon and one dashboard for every Serena MCP server on the machine.
//!
//! `core` is the library everything else drives and never imports tauri; `cli` is the
//! command-line front end; `launch` is the wrapper MCP clients run Serena through; `shell`
//! (feature `gui`) is the Tauri tray app, thin adapters only.

pub mod cli;
pub mod core;
pub mod launch;
#[cfg(feature = "gui")]
pub mod shell;
