//! Build script: with the `gui` feature, tauri-build reads `tauri.conf.json` and prepares the
//! context that `tauri::generate_context!` embeds. The core alone needs nothing.
fn main() {
    #[cfg(feature = "gui")]
    tauri_build::build();
}
