//! The real `eqs-proxy` binary, started for a test (crash.rs, traces.rs).

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// Starts `eqs-proxy` on an ephemeral loopback port with JSON logs, after `configure` adds the
/// backend flags and environment; returns it with its URL (read from its "ready" log line).
pub async fn spawn_proxy(configure: impl FnOnce(&mut Command)) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eqs-proxy"));
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    configure(&mut command);
    let mut child = command.spawn().expect("eqs-proxy starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["message"] == "eqs-proxy ready" {
                return event["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("eqs-proxy exited before it was ready");
    })
    .await
    .expect("eqs-proxy ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}
