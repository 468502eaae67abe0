//! Starting the eos-proxy binary for integration tests.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// Starts eos-proxy with `args` (plus `--listen 127.0.0.1:0 --log-format json`) and `envs` on an
/// ephemeral port; returns it and its URL once it logs that it is ready.
pub async fn spawn_proxy(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eos-proxy"));
    command.args(["--listen", "127.0.0.1:0", "--log-format", "json"]).args(args);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("eos-proxy starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["message"] == "eos-proxy ready" {
                return event["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("eos-proxy exited before it was ready");
    })
    .await
    .expect("eos-proxy ready in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}
