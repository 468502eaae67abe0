//! OpenTelemetry: the real `eqs-proxy` binary exports its spans over OTLP/gRPC to a receiver
//! run here. A send made by exo-sdk inside an app's trace continues it (server span, backend
//! span under it), the message carries the send's context, and a receive in another trace links
//! to the send. Without the endpoint nothing is exported and messages carry nothing extra.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use exo_sdk::{Outgoing, QueueClient, QueueOptions, Receive, RetryPolicy, TopicClient};
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tokio::process::Child;

mod binary;

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (receiver, url)
}

async fn spawn_proxy(otlp: Option<&str>) -> (Child, String) {
    binary::spawn_proxy(|command| {
        command
            .args(["--backend", "memory"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_SERVICE_NAME", "eqs-under-test");
        if let Some(url) = otlp {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", url);
        }
    })
    .await
}

fn app_context(trace: &str, span: &str) -> Context {
    let remote = SpanContext::new(
        TraceId::from_hex(trace).unwrap(),
        SpanId::from_hex(span).unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(remote)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";
const CONSUMER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CONSUMER_SPAN: &str = "b7ad6b7169203331";

// One test per process: the propagator the app sets is global.
#[tokio::test(flavor = "current_thread")]
async fn a_send_continues_the_apps_trace_and_the_receive_links_to_it() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let (receiver, otlp) = start_receiver().await;
    let (mut proxy, url) = spawn_proxy(Some(&otlp)).await;
    let client = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("traced", QueueOptions::default()).await.unwrap();

    {
        let _app = app_context(APP_TRACE, APP_SPAN).attach();
        client.send_message("traced", Outgoing::new("hello").attribute("k", "v")).await.unwrap();
    }
    let received = {
        let _consumer = app_context(CONSUMER_TRACE, CONSUMER_SPAN).attach();
        client.receive("traced", Receive::up_to(1).wait(Duration::from_secs(2))).await.unwrap()
    };
    assert_eq!(received.len(), 1);
    let carried =
        received[0].attributes.get("traceparent").cloned().expect("the message carries the send's context");
    assert_eq!(received[0].attributes.get("k").map(String::as_str), Some("v"));

    // Spans arrive in batches every 100 ms.
    let (send, backend, receive) = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            {
                let spans = receiver.0.lock().unwrap();
                let send = spans
                    .iter()
                    .find(|s| hex(&s.trace_id) == APP_TRACE && hex(&s.parent_span_id) == APP_SPAN)
                    .cloned();
                let receive = spans
                    .iter()
                    .find(|s| hex(&s.trace_id) == CONSUMER_TRACE && hex(&s.parent_span_id) == CONSUMER_SPAN)
                    .cloned();
                if let (Some(send), Some(receive)) = (send, receive) {
                    let backend = spans.iter().find(|s| s.parent_span_id == send.span_id).cloned();
                    if let Some(backend) = backend {
                        return (send, backend, receive);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("spans not exported: {:#?}", receiver.0.lock().unwrap()));

    assert!(send.name.contains("Send"), "send span named {:?}", send.name);
    assert_eq!(send.kind, 2, "a server span");
    assert_eq!(backend.name, "memory send");
    assert_eq!(backend.kind, 3, "a client span");
    assert_eq!(hex(&backend.trace_id), APP_TRACE);
    assert_eq!(
        carried,
        format!("00-{APP_TRACE}-{}-01", hex(&send.span_id)),
        "the message names the send span"
    );
    assert!(
        receive.links.iter().any(|l| hex(&l.trace_id) == APP_TRACE && l.span_id == send.span_id),
        "the receive links to the send: {:?}",
        receive.links
    );
    // A publish carries its context to every subscription's copy, as a send does.
    let topics = TopicClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    topics.create_topic("traced-topic").await.unwrap();
    topics.subscribe("traced-topic", "copy", "traced-copy", "", Some(QueueOptions::default())).await.unwrap();
    {
        let _app = app_context(APP_TRACE, APP_SPAN).attach();
        topics.publish("traced-topic", Outgoing::new("published")).await.unwrap();
    }
    let copy = client.receive("traced-copy", Receive::up_to(1).wait(Duration::from_secs(2))).await.unwrap();
    let carried =
        copy.first().and_then(|m| m.attributes.get("traceparent")).expect("the copy carries a context");
    assert!(
        carried.starts_with(&format!("00-{APP_TRACE}-")),
        "the copy names the publish's trace: {carried}"
    );
    // HTTP spans are named by route template, not by the queue; probes make no spans.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        http.get(format!("{url}/readyz")).send().await.unwrap();
    }
    let sent = http
        .post(format!("{url}/api/v1/queues/traced/messages"))
        .json(&serde_json::json!({"message": {"body": "eA=="}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let named = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(span) =
                receiver.0.lock().unwrap().iter().find(|s| s.name.starts_with("POST /api/v1/queues")).cloned()
            {
                return span;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the HTTP send's span was exported");
    assert_eq!(named.name, "POST /api/v1/queues/{queue}/messages");
    let names: Vec<String> = receiver.0.lock().unwrap().iter().map(|s| s.name.clone()).collect();
    assert!(
        !names.iter().any(|n| n.contains("readyz") || n.contains("Health") || n.contains("/traced")),
        "probes traced, or a resource name in a span name: {names:?}"
    );
    proxy.kill().await.unwrap();

    // Without the endpoint: nothing exported, and nothing added to messages.
    let (mut plain, url) = spawn_proxy(None).await;
    let client = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("plain", QueueOptions::default()).await.unwrap();
    {
        let _app = app_context(APP_TRACE, APP_SPAN).attach();
        client.send_message("plain", Outgoing::new("x")).await.unwrap();
    }
    let got = client.receive("plain", Receive::up_to(1)).await.unwrap();
    assert!(got[0].attributes.is_empty(), "{:?}", got[0].attributes);
    plain.kill().await.unwrap();
}
