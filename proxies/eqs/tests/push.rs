//! Push delivery: a subscription with `push:` in the config has its messages POSTed to an app
//! endpoint (a real HTTP server here); 2xx acknowledges, anything else is delivered again later
//! and dead-lettered per the queue's settings; at most `concurrency` POSTs at once.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use eqs::config::{DeclaredSubscription, DeclaredTopic, EqsConfig, PushConfig};
use exo_sdk::{Outgoing, QueueClient, QueueOptions, Receive, RetryPolicy, TopicClient};

/// One POST as the app saw it: body, dequeue count, publish-id header, whether it answered 2xx.
type Seen = (Vec<u8>, u32, String, bool);

/// What the app saw: each POST's decoded message, and how it answered.
#[derive(Default)]
struct App {
    /// Bodies the app refuses (500) this many more times.
    refuse: Mutex<HashMap<Vec<u8>, usize>>,
    /// (body, dequeue count, publish id header, answered 2xx).
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// How long each POST takes.
    delay: Duration,
}

async fn handle(State(app): State<Arc<App>>, headers: axum::http::HeaderMap, body: Bytes) -> StatusCode {
    let now = app.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    app.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(app.delay).await;
    let pushed = exo_sdk::decode_pushed(&body).expect("a PushedMessage");
    let message = pushed.message.expect("a message");
    assert_eq!((pushed.topic.as_str(), pushed.subscription.as_str()), ("orders", "pushed"));
    assert!(message.receipt.is_empty(), "the app never sees a receipt");
    let refuse = {
        let mut refuse = app.refuse.lock().unwrap();
        match refuse.get_mut(&message.body) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    let header = headers.get("x-exo-publish-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(Some(&header), message.attributes.get(exo_sdk::PUBLISH_ID_ATTRIBUTE));
    app.seen.lock().unwrap().push((message.body, message.dequeue_count, header, !refuse));
    app.in_flight.fetch_sub(1, Ordering::SeqCst);
    if refuse { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
}

/// The app on an ephemeral loopback port; returns its endpoint URL.
async fn serve_app(app: Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/events", post(handle)).with_state(app);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/events")
}

fn config(url: &str, concurrency: u32) -> EqsConfig {
    let push = |queue: &str, name: &str| DeclaredSubscription {
        name: name.into(),
        queue: queue.into(),
        filter: String::new(),
        create_queue: false,
        push: Some(PushConfig { url: url.into(), concurrency, timeout: Duration::from_secs(2) }),
    };
    EqsConfig {
        topics: vec![DeclaredTopic {
            name: "orders".into(),
            subscriptions: vec![
                push("pushed-q", "pushed"),
                DeclaredSubscription {
                    name: "pulled".into(),
                    queue: "pulled-q".into(),
                    filter: String::new(),
                    create_queue: true,
                    push: None,
                },
            ],
        }],
        ..EqsConfig::default()
    }
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_messages_are_acked_on_2xx_retried_otherwise_and_dead_lettered() {
    let app = Arc::new(App { delay: Duration::from_millis(20), ..App::default() });
    let url = serve_app(app.clone()).await;
    let (addr, _stop) = common::start(config(&url, 4)).await;
    let base = format!("http://{addr}");
    let queues = QueueClient::connect(&base).unwrap().with_retry(RetryPolicy::none());
    let topics = TopicClient::connect(&base).unwrap().with_retry(RetryPolicy::none());
    // The push queue must exist (no create-queue): the proxy waits for it, not ready till then.
    let ready = || async { reqwest::get(format!("{base}/readyz")).await.unwrap().status() };
    assert_eq!(ready().await, 503, "not ready before the declared subscription's queue exists");
    queues.create_queue("dead", QueueOptions::default()).await.unwrap();
    let dead_lettering =
        QueueOptions { max_receives: 3, dead_letter_queue: "dead".into(), ..Default::default() };
    queues.create_queue("pushed-q", dead_lettering).await.unwrap();
    let started = Instant::now();
    while ready().await != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "the declared topics were never made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    app.refuse.lock().unwrap().insert(b"flaky".to_vec(), 2);
    app.refuse.lock().unwrap().insert(b"poison".to_vec(), usize::MAX);
    for body in ["fine", "flaky", "poison"] {
        topics.publish("orders", Outgoing::new(body).attribute("k", "v")).await.unwrap();
    }
    // fine: once, acked. flaky: refused twice, then acked on its third delivery.
    until("fine and flaky delivered", Duration::from_secs(20), || {
        let seen = app.seen.lock().unwrap();
        seen.iter().any(|(b, _, _, ok)| b == b"fine" && *ok)
            && seen.iter().any(|(b, _, _, ok)| b == b"flaky" && *ok)
    })
    .await;
    // poison: refused max-receives times, then moved to the dead-letter queue.
    let mut dead = Vec::new();
    let started = Instant::now();
    while dead.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "poison never reached the dead-letter queue");
        dead = queues.receive("dead", Receive::up_to(10).wait(Duration::from_secs(1))).await.unwrap();
    }
    assert_eq!(dead[0].body, b"poison");
    let seen = app.seen.lock().unwrap().clone();
    let deliveries = |body: &[u8]| -> Vec<u32> {
        seen.iter().filter(|(b, ..)| b == body).map(|(_, count, ..)| *count).collect()
    };
    assert_eq!(deliveries(b"fine"), vec![1], "{seen:?}");
    assert_eq!(deliveries(b"flaky"), vec![1, 2, 3], "{seen:?}");
    assert_eq!(deliveries(b"poison"), vec![1, 2, 3], "{seen:?}");
    assert!(seen.iter().all(|(_, _, id, _)| !id.is_empty()), "every POST names its publish id");
    // Nothing is left in the push queue; the pulled subscription got its own copies untouched.
    let left = queues.queue_info("pushed-q").await.unwrap();
    assert_eq!(left.visible_messages + left.in_flight_messages + left.delayed_messages, 0, "{left:?}");
    let pulled = queues.receive("pulled-q", Receive::up_to(10)).await.unwrap();
    assert_eq!(pulled.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_posts_are_in_flight() {
    let app = Arc::new(App { delay: Duration::from_millis(150), ..App::default() });
    let url = serve_app(app.clone()).await;
    let (addr, _stop) = common::start(config(&url, 2)).await;
    let base = format!("http://{addr}");
    let queues = QueueClient::connect(&base).unwrap().with_retry(RetryPolicy::none());
    let topics = TopicClient::connect(&base).unwrap().with_retry(RetryPolicy::none());
    queues.create_queue("pushed-q", QueueOptions::default()).await.unwrap();
    // Until the declared topic exists, publishing finds no topic.
    let started = Instant::now();
    while topics.topic_info("orders").await.map(|t| t.subscriptions.len()).unwrap_or(0) < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the declared topic was never made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let batch: Vec<Outgoing> = (0..10).map(|i| Outgoing::new(format!("m{i}"))).collect();
    for result in topics.publish_batch("orders", batch).await.unwrap() {
        result.unwrap();
    }
    until("all ten delivered", Duration::from_secs(20), || app.seen.lock().unwrap().len() >= 10).await;
    let most = app.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} POSTs were in flight at once, above concurrency 2");
    assert_eq!(most, 2, "the two slots were never used together (the loop is serial)");
}

#[test]
fn push_endpoints_must_be_loopback_http() {
    for (url, ok) in [
        ("http://127.0.0.1:8080/events", true),
        ("http://localhost/e", true),
        ("http://[::1]:9000/", true),
        ("https://127.0.0.1/e", false),
        ("http://10.0.0.5:8080/e", false),
        ("http://example.com/e", false),
        ("ftp://127.0.0.1/", false),
    ] {
        let push = PushConfig { url: url.into(), concurrency: 4, timeout: Duration::from_secs(5) };
        assert_eq!(push.validate("t").is_ok(), ok, "{url}");
    }
}
