//! The core: everything that is not GUI. It finds and classifies Serena instances, keeps the
//! shared registry, launches and releases sessions, serves the API, and publishes typed events.
//! It never imports tauri: the tray shell, the daemon verb and the CLI drive the running program
//! through one cloneable [`app::App`] handle (the model's own handle, [`Core`], is inside it).

pub mod api;
pub mod app;
pub mod background;
pub mod classify;
pub mod clock;
pub mod cmdline;
pub mod configure;
mod cost;
pub mod engine;
pub mod events;
pub mod files;
pub mod heap;
pub mod http;
pub mod kill;
pub mod model;
pub mod probe;
pub mod procs;
pub mod reaper;
mod refresh;
pub mod registry;
pub mod running;
pub mod sessions;
pub mod settings;
pub mod sockets;
pub mod timeline;
pub mod token;
pub mod tray_protocol;
pub mod watch;
pub mod writes;

pub use engine::{Core, CoreError};
pub use events::Event;
pub use model::{Instance, State, Transport, ZombieReason};
pub use settings::Settings;
