//! Build script: with the `gui` feature, tauri-build reads `tauri.conf.json` and prepares the
//! context that `tauri::generate_context!` embeds. For every build: the files of `ui/` are
//! embedded (rust-embed, `core/api/ui.rs`), so a file added to or removed from `ui/` must
//! rebuild the crate (an edited one does anyway: each is an `include_bytes!`); and
//! `SERENA_TRAY_VERSION` is the version `--version` prints: the crate's, with the git commit it
//! was built from when built from a git checkout.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=ui");
    let version = env!("CARGO_PKG_VERSION");
    let full = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            watch_git_head();
            format!("{version} ({commit})")
        }
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=SERENA_TRAY_VERSION={full}");
    #[cfg(feature = "gui")]
    tauri_build::build();
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branches (a commit) and
/// the packed refs (a fresh clone's branches live there). Only paths that exist: a missing one
/// would rerun it on every build.
fn watch_git_head() {
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
