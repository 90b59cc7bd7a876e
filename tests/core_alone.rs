//! The one rule of the layout: `src-tauri/core/` never imports tauri, and the crate without its
//! default `gui` feature (the core alone, no GTK/WebKit) builds and its tests compile.

mod common;

use std::path::Path;
use std::process::Command;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_sources_never_mention_tauri() {
    let mut files = Vec::new();
    rust_files(&common::repo().join("src-tauri/core"), &mut files);
    assert!(files.len() >= 5, "found the core sources: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains("tauri"),
                "{}:{} uses tauri: {line}",
                f.display(),
                n + 1
            );
        }
    }
}

#[test]
fn the_core_alone_builds_without_the_gui_feature() {
    let repo = common::repo();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Its own target directory (the test command's core-alone step shares it).
    let target = repo.join("target/core-alone");
    let out = Command::new(&cargo)
        .args([
            "test",
            "--no-default-features",
            "--lib",
            "--no-run",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&repo)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "cargo test --no-default-features failed to build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = Command::new(&cargo)
        .args([
            "tree",
            "--no-default-features",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(&repo)
        .output()
        .expect("cargo tree");
    assert!(tree.status.success());
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.lines().count() > 20, "a real dependency tree: {tree}");
    for bad in ["tauri ", "wry ", "webkit2gtk ", "gtk "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(bad)),
            "the core alone depends on {bad}"
        );
    }
}
