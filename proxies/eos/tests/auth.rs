//! eos-proxy with `server.auth-token`: presigned URLs work without the token (their signature
//! is their authorisation), everything else needs it, and the bearer scheme is case-insensitive.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Command,
};

const TOKEN: &str = "presign-test-token";

mod common;

async fn spawn_proxy() -> (tokio::process::Child, String) {
    let config = "server:\n  auth-token: env:EXO_TEST_EOS_TOKEN\nbackend:\n  kind: memory\n";
    common::spawn_proxy(&[], &[("EXO_CONFIG_YAML", config), ("EXO_TEST_EOS_TOKEN", TOKEN)]).await
}

#[tokio::test]
async fn presigned_urls_need_no_token_and_the_bearer_scheme_is_case_insensitive() {
    let (_child, url) = spawn_proxy().await;
    let http = reqwest::Client::new();
    let denied = http.post(format!("{url}/api/v1/buckets")).body(r#"{"name":"docs"}"#).send().await.unwrap();
    assert_eq!(denied.status(), 401, "no token, no bucket");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = http
            .get(format!("{url}/api/v1/buckets"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "scheme {scheme}");
    }
    let authed = |request: reqwest::RequestBuilder| request.bearer_auth(TOKEN);
    let created = authed(http.post(format!("{url}/api/v1/buckets")).body(r#"{"name":"docs"}"#)).send().await;
    assert!(created.unwrap().status().is_success());

    let presign = |method: &str| {
        authed(http.post(format!("{url}/api/v1/buckets/docs/presign")))
            .body(format!(r#"{{"key":"a.txt","method":"{method}","expiresInSeconds":60}}"#))
            .send()
    };
    let put: serde_json::Value = presign("PUT").await.unwrap().json().await.unwrap();
    let put_url = put["url"].as_str().expect("a PUT URL");
    let stored = http.put(put_url).body("via a presigned URL").send().await.unwrap();
    assert_eq!(stored.status(), 200, "a presigned PUT needs no token: {}", stored.text().await.unwrap());
    let get: serde_json::Value = presign("GET").await.unwrap().json().await.unwrap();
    let get_url = get["url"].as_str().expect("a GET URL");
    let read = http.get(get_url).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.text().await.unwrap(), "via a presigned URL");

    // The signature is what authorises: a tampered one is refused, token or not.
    let tampered = get_url.replace("signature=", "signature=0");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    let no_signature = format!("{url}/api/v1/presigned/docs/a.txt");
    assert!(http.get(&no_signature).send().await.unwrap().status().is_client_error());
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eos-proxy"))
        .args(["--listen", "127.0.0.1:0", "--backend", "memory", "--log-format", "text"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("eos-proxy starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let text = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("eos-proxy ready") {
                return seen;
            }
        }
        panic!("eos-proxy exited before it was ready:\n{seen}");
    })
    .await
    .expect("eos-proxy ready in time");
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in piped logs:\n{text:?}");
}
