//! Build script: with the `gui` feature, tauri-build reads `tauri.conf.json` and prepares the
//! context that `tauri::generate_context!` embeds. For every build: the files of `ui/` are
//! embedded (rust-embed, `core/api/ui.rs`), so a file added to or removed from `ui/` must
//! rebuild the crate (an edited one does anyway: each is an `include_bytes!`).
fn main() {
    println!("cargo:rerun-if-changed=ui");
    #[cfg(feature = "gui")]
    tauri_build::build();
}
