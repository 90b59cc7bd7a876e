//! The App handle in-process: every background task stops with it, and an instance's exit
//! watcher (a pidfd on Linux) ends when the instance leaves the model, so a long-running app
//! does not collect file descriptors.

mod common;

use common::*;
use serde_json::json;
use serena_tray::core::app::App;
use serena_tray::core::background::{self, Started};
use std::time::Duration;

/// The pidfds this process holds (only exit watchers and kills open them).
fn pidfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("pidfd"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn start(home: &Home) -> App {
    match background::start(home.settings()).await {
        Ok(Started::Running(app)) => app,
        Ok(Started::AlreadyRunning { url }) => panic!("port 0 is never taken: {url}"),
        Err(e) => panic!("the app did not start: {e}"),
    }
}

#[test]
fn exit_watchers_end_with_their_instances_and_shutdown_ends_every_task() {
    const CYCLES: usize = 1000;
    let home = Home::new();
    let mut reaper = Reaper::default();
    // A long-lived process of this test, recorded in the registry: shown while its entry is
    // there (with an exit watcher), gone from the model when the entry goes.
    let mut sleep = std::process::Command::new("sleep");
    home.env(&mut sleep);
    let sleeper = reaper.adopt(sleep.arg("600").spawn().expect("sleep"));
    let started_at = snapshot()
        .get(sleeper)
        .expect("the sleeper runs")
        .start_time;
    let entry = json!([{"pid": sleeper, "port": null, "started_at": started_at as f64,
        "last_heartbeat": 0.0, "context": null, "modes": [], "project_name": null,
        "state": "live_no_project"}])
    .to_string();
    let registry = home.registry_path();

    block_on(async {
        let app = start(&home).await;
        let port = app.port();
        let before = pidfds();
        let mut shown = 0;
        let mut armed = false;
        for _ in 0..CYCLES {
            std::fs::write(&registry, &entry).expect("write the registry");
            let all = app.core().refresh().await.expect("refresh");
            shown += usize::from(all.iter().any(|i| i.pid == sleeper));
            if !armed {
                // The first time, see its watcher open a pidfd (so that the count below means
                // something).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while pidfds() <= before && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                armed = pidfds() > before;
                assert!(armed, "an exit watcher opened a pidfd for the instance");
            }
            std::fs::write(&registry, "[]").expect("empty the registry");
            let all = app.core().refresh().await.expect("refresh");
            assert!(all.iter().all(|i| i.pid != sleeper), "it left the model");
        }
        assert_eq!(shown, CYCLES, "each cycle showed the recorded process");
        // The watchers are cancelled by their own task as the events arrive.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pidfds() > before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = pidfds();
        eprintln!("pidfds before {before}, after {CYCLES} cycles {after}");
        assert!(
            after <= before,
            "exit watchers outlived their instances: {before} pidfds before, {after} after"
        );

        tokio::time::timeout(Duration::from_secs(10), app.shutdown())
            .await
            .expect("shutdown returns once every task is gone");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the API stopped listening"
        );
    });
}

#[test]
fn shutdown_is_prompt_with_an_event_stream_open() {
    let home = Home::new();
    block_on(async {
        let app = start(&home).await;
        let client = http::client();
        let mut stream = client
            .get(format!("http://127.0.0.1:{}/api/events", app.port()))
            .bearer_auth(app.token())
            .send()
            .await
            .expect("the event stream");
        let first = stream.chunk().await.expect("read").expect("a chunk");
        assert!(String::from_utf8_lossy(&first).contains("snapshot"));
        // The stream ends with the app instead of holding its shutdown for the servers' grace
        // (http::serve::SHUTDOWN_GRACE, 5 s).
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(4), app.shutdown())
            .await
            .expect("shutdown does not wait for an open event stream");
        eprintln!(
            "shutdown with an open event stream: {:?}",
            started.elapsed()
        );
        let rest = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = stream.chunk().await {}
        })
        .await;
        assert!(rest.is_ok(), "the stream ended");
    });
}
