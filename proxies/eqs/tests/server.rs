//! The proxy as a server: health, reflection, probes, metrics, OpenAPI, body limits, malformed
//! requests and graceful shutdown, all over real sockets.

use std::{sync::Arc, time::Duration};

use eqs::{EqsProxy, config::EqsConfig, services::memory::MemoryQueue};
use exo_sdk::{QueueClient, QueueOptions, Reason, Receive, RetryPolicy};
use tokio::sync::oneshot;

struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_with(mut config: EqsConfig) -> Running {
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let proxy = EqsProxy::bind_with(&config, Arc::new(MemoryQueue::new(256 * 1024))).await.unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        proxy
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running { url, stop: Some(stop), task }
}

async fn start() -> Running {
    start_with(EqsConfig::default()).await
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap()
}

fn client(url: &str) -> QueueClient {
    QueueClient::connect(url).unwrap().with_retry(RetryPolicy::none())
}

#[tokio::test]
async fn grpc_health_reports_serving_for_the_queue_service() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let proxy = start().await;
    let mut health = HealthClient::new(channel(&proxy.url).await);
    for service in ["", "exo.queue.v1.QueueService"] {
        let mut status = ServingStatus::Unknown;
        for _ in 0..50 {
            let response = health.check(HealthCheckRequest { service: service.into() }).await;
            if let Ok(response) = response {
                status = response.into_inner().status();
                if status == ServingStatus::Serving {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn grpc_reflection_lists_the_exoflow_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let proxy = start().await;
    let mut reflection = ServerReflectionClient::new(channel(&proxy.url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"exo.queue.v1.QueueService".to_owned()), "{names:?}");
}

#[tokio::test]
async fn probes_and_metrics_answer_on_the_same_port() {
    let proxy = start().await;
    let http = reqwest::Client::new();
    let healthz = http.get(format!("{}/healthz", proxy.url)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = http.get(format!("{}/readyz", proxy.url)).send().await.unwrap();
    assert_eq!(readyz.status(), 200);

    let queues = client(&proxy.url);
    queues.create_queue("metered", QueueOptions::default()).await.unwrap();
    queues.send("metered", "x").await.unwrap();
    let _ = queues.send("absent", "x").await.unwrap_err();
    let metrics = http.get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"exo_requests_total{service="queue",op="send",backend="memory",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"exo_requests_total{service="queue",op="send",backend="memory",outcome="QUEUE_NOT_FOUND"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("exo_request_duration_seconds_bucket"), "{metrics}");
}

/// Every path and method in the OpenAPI document is served (never the router's 404), and every
/// route the server has is documented.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let proxy = start().await;
    let http = reqwest::Client::new();
    let doc: serde_json::Value =
        http.get(format!("{}/api/v1/openapi.json", proxy.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "not OpenAPI 3");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            // Only eqs's own routes and the shared ones; ekv's are checked by its conformance run.
            let tag = operation["tags"][0].as_str().unwrap_or_default();
            if !["get", "post", "delete", "put"].contains(&method.as_str())
                || !["queues", "meta"].contains(&tag)
            {
                continue;
            }
            documented.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path.replace("{queue}", "doc-check");
            let request = match method.as_str() {
                "get" => http.get(format!("{}{concrete}", proxy.url)),
                "delete" => http.delete(format!("{}{concrete}", proxy.url)),
                _ => http
                    .post(format!("{}{concrete}", proxy.url))
                    .header("content-type", "application/json")
                    .body("{}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("ROUTE_NOT_FOUND") && status != 405,
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
    let served = [
        "GET /api/v1/openapi.json",
        "GET /api/v1/describe",
        "GET /api/v1/queues",
        "POST /api/v1/queues",
        "GET /api/v1/queues/{queue}",
        "DELETE /api/v1/queues/{queue}",
        "POST /api/v1/queues/{queue}/purge",
        "POST /api/v1/queues/{queue}/messages",
        "POST /api/v1/queues/{queue}/messages/batch",
        "POST /api/v1/queues/{queue}/messages/receive",
        "POST /api/v1/queues/{queue}/messages/ack",
        "POST /api/v1/queues/{queue}/messages/visibility",
    ];
    for route in served {
        assert!(documented.contains(&route.to_owned()), "{route} is served but not documented");
    }
    assert_eq!(documented.len(), served.len(), "documented: {documented:?}");
}

#[tokio::test]
async fn oversize_http_body_is_a_problem_and_writes_nothing() {
    let mut config = EqsConfig::default();
    config.server.max_request_bytes = 64 * 1024;
    let proxy = start_with(config).await;
    let queues = client(&proxy.url);
    queues.create_queue("limited", QueueOptions::default()).await.unwrap();
    let huge = format!(r#"{{"message":{{"body":"{}"}}}}"#, "A".repeat(200 * 1024));
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/limited/messages", proxy.url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["reason"], "REQUEST_TOO_LARGE");
    assert_eq!(queues.queue_info("limited").await.unwrap().visible_messages, 0);
}

#[tokio::test]
async fn oversize_grpc_message_is_request_too_large_and_writes_nothing() {
    let mut config = EqsConfig::default();
    config.server.max_request_bytes = 320 * 1024;
    let proxy = start_with(config).await;
    let queues = client(&proxy.url);
    queues.create_queue("limited", QueueOptions::default()).await.unwrap();
    let err = queues.send("limited", vec![0u8; 400 * 1024]).await.unwrap_err();
    assert_eq!(err.reason, Reason::RequestTooLarge, "{err}");
    assert_eq!(err.code, exo_sdk::Code::ResourceExhausted);
    assert_eq!(queues.queue_info("limited").await.unwrap().visible_messages, 0);
}

#[tokio::test]
async fn malformed_protobuf_is_malformed_request() {
    let proxy = start().await;
    // A gRPC frame whose payload is not a SendRequest (field 1 claims 100 bytes, has 2).
    let payload = [0x0a, 100, b'x', b'y'];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    // reqwest speaks HTTP/1.1 here, so use a raw HTTP/2 client via tonic's channel instead.
    let mut grpc = tonic::client::Grpc::new(channel(&proxy.url).await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/exo.queue.v1.QueueService/Send");
    let result: Result<tonic::Response<Vec<u8>>, tonic::Status> =
        grpc.unary(tonic::Request::new(frame[5..].to_vec()), path, RawCodec).await;
    let err = exo_sdk::Error::from(result.unwrap_err());
    assert_eq!(err.reason, Reason::MalformedRequest, "{err}");
    assert_eq!(err.code, exo_sdk::Code::InvalidArgument);
}

#[tokio::test]
async fn shutdown_drains_a_waiting_receive() {
    let mut proxy = start().await;
    let queues = client(&proxy.url);
    queues.create_queue("drain", QueueOptions::default()).await.unwrap();
    let waiting = {
        let queues = queues.clone();
        tokio::spawn(
            async move { queues.receive("drain", Receive::up_to(1).wait(Duration::from_secs(2))).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = proxy.stop.take().unwrap().send(());
    // The in-flight long poll completes normally (empty after its wait) rather than being cut.
    let received = waiting.await.unwrap().expect("in-flight receive must complete during shutdown");
    assert!(received.is_empty());
    tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("server stops after draining")
        .unwrap();
}

/// Passes raw bytes through, to send deliberately malformed protobuf.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        use bytes_put::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        use bytes_put::Buf as _;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

mod bytes_put {
    pub use bytes::{Buf, BufMut};
}

#[tokio::test]
async fn queue_depth_is_exported_for_autoscalers() {
    let proxy = start().await;
    let queues = client(&proxy.url);
    queues.create_queue("depth", QueueOptions::default()).await.unwrap();
    for _ in 0..3 {
        queues.send("depth", "x").await.unwrap();
    }
    queues.receive("depth", Receive::up_to(1).visibility(Duration::from_secs(60))).await.unwrap();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + eqs::DEPTH_SAMPLE_INTERVAL * 2;
    loop {
        let metrics = http.get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
        if metrics.contains(r#"exo_queue_visible_messages{queue="depth"} 2"#)
            && metrics.contains(r#"exo_queue_in_flight_messages{queue="depth"} 1"#)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "queue depth never exported:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_bearer_token_guards_every_call_but_the_probes() {
    // SAFETY: this test's own variable; no other test reads it.
    unsafe { std::env::set_var("EXO_TEST_PROXY_TOKEN_GUARD", "s3cret-token") };
    let mut config = EqsConfig::default();
    config.server.auth_token =
        Some(exo_proxy_core::secret::SecretRef::Env("EXO_TEST_PROXY_TOKEN_GUARD".into()));
    let proxy = start_with(config).await;

    let anonymous = client(&proxy.url);
    let err = anonymous.create_queue("guarded", QueueOptions::default()).await.unwrap_err();
    assert_eq!(err.reason, Reason::Unauthenticated, "{err}");
    assert_eq!(err.code, exo_sdk::Code::Unauthenticated);
    let wrong = client(&proxy.url).with_auth(exo_sdk::Auth::bearer("guess").unwrap()).unwrap();
    assert_eq!(
        wrong.create_queue("guarded", QueueOptions::default()).await.unwrap_err().reason,
        Reason::Unauthenticated
    );
    let allowed = client(&proxy.url).with_auth(exo_sdk::Auth::bearer("s3cret-token").unwrap()).unwrap();
    allowed.create_queue("guarded", QueueOptions::default()).await.unwrap();

    let http = reqwest::Client::new();
    let denied = http.get(format!("{}/api/v1/queues", proxy.url)).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let problem: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(problem["reason"], "UNAUTHENTICATED");
    let ok =
        http.get(format!("{}/api/v1/queues", proxy.url)).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let lower_case = http
        .get(format!("{}/api/v1/queues", proxy.url))
        .header("authorization", "bearer s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(lower_case.status(), 200, "the scheme is case-insensitive (RFC 9110)");
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http.get(format!("{}{open}", proxy.url)).send().await.unwrap().status(),
            200,
            "{open} must stay open"
        );
    }
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(&proxy.url).await);
    health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("gRPC health stays open for kubelet probes");
}

#[tokio::test]
async fn a_malformed_path_is_a_problem_not_plain_text() {
    let proxy = start().await;
    let response =
        reqwest::Client::new().get(format!("{}/api/v1/queues/%FF", proxy.url)).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["reason"], "MALFORMED_REQUEST");
}

#[tokio::test]
async fn the_callers_deadline_shortens_a_long_poll_and_an_expired_one_writes_nothing() {
    use exo_proto::queue::v1 as pb;
    let proxy = start().await;
    let queues = client(&proxy.url);
    queues.create_queue("deadline", QueueOptions::default()).await.unwrap();
    // gRPC: a 20 s long poll from a caller that waits 1 s answers empty before the caller gives
    // up (tonic's set_timeout sends grpc-timeout), instead of failing with DEADLINE_EXCEEDED.
    let mut raw = queues.raw();
    let mut request = tonic::Request::new(pb::ReceiveRequest {
        queue: "deadline".into(),
        wait_seconds: 20,
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(1));
    let clock = std::time::Instant::now();
    let answer = raw.receive(request).await.expect("an empty answer, not a deadline error").into_inner();
    let took = clock.elapsed();
    assert!(answer.messages.is_empty());
    assert!(took >= Duration::from_millis(700) && took < Duration::from_millis(1000), "{took:?}");
    // HTTP: the same with x-exo-timeout-ms.
    let http = reqwest::Client::new();
    let clock = std::time::Instant::now();
    let response = http
        .post(format!("{}/api/v1/queues/deadline/messages/receive", proxy.url))
        .header("x-exo-timeout-ms", "800")
        .json(&serde_json::json!({"waitSeconds": 20}))
        .send()
        .await
        .unwrap();
    let took = clock.elapsed();
    assert_eq!(response.status(), 200);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(800), "{took:?}");
    // A caller whose time is already up gets TIMEOUT (504) and its send is not stored.
    let response = http
        .post(format!("{}/api/v1/queues/deadline/messages", proxy.url))
        .header("x-exo-timeout-ms", "0")
        .json(&serde_json::json!({"message": {"body": "aGk="}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["reason"], "TIMEOUT", "{problem}");
    assert_eq!(queues.queue_info("deadline").await.unwrap().visible_messages, 0);
}
