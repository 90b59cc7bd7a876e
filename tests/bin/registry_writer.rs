//! One writer process for the registry concurrency test (tests/registry.rs): makes `UPDATES`
//! read-modify-write updates, each bumping a shared counter entry and its own entry.
//! Usage: registry-writer SERENA_HOME WRITER_ID UPDATES

use serena_tray::core::registry::{Registry, RegistryEntry};
use std::path::PathBuf;
use std::process::ExitCode;

/// The entry every writer increments (a shared counter kept in `last_heartbeat`).
const SHARED_PID: u32 = 1;

fn bump(entries: &mut Vec<RegistryEntry>, pid: u32) {
    match entries.iter_mut().find(|e| e.pid == pid) {
        Some(e) => e.last_heartbeat += 1.0,
        None => {
            let mut e = RegistryEntry::new(pid, 1.0);
            e.last_heartbeat = 1.0;
            entries.push(e);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(home), Some(Ok(id)), Some(Ok(updates))) = (
        args.first(),
        args.get(1).map(|s| s.parse::<u32>()),
        args.get(2).map(|s| s.parse::<u32>()),
    ) else {
        eprintln!("usage: registry-writer SERENA_HOME WRITER_ID UPDATES");
        return ExitCode::from(2);
    };
    let reg = Registry::new(&PathBuf::from(home));
    for _ in 0..updates {
        if let Err(e) = reg.update(|entries| {
            bump(entries, SHARED_PID);
            bump(entries, 1000 + id);
        }) {
            eprintln!("registry-writer {id}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
