//! The large-message layer beyond what the conformance suite can see through the API: the
//! objects themselves (written, deleted on ack, swept once no message can reference them),
//! references written by another producer (the AWS extended client's format), and a reference
//! whose object is gone. Embedded queue, fs store, both real.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use eqs::ops;
use eqs::{
    backend::Queue,
    config::{BackendConfig, EqsConfig, LargeMessagesConfig},
    layers::LargeMessageQueue,
    model::{QueueName, ReceiveParams, UNDECODABLE_ATTRIBUTE},
    services::embedded::EmbeddedConfig,
};
use exo_objects::{
    backend::ObjectStore,
    model::{BucketName, ByteStream, PutMeta, WriteCondition},
};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::metrics::Metrics;

const INLINE: u64 = 4096;

struct Setup {
    layer: Arc<LargeMessageQueue>,
    inner: Arc<dyn Queue>,
    store: Arc<dyn ObjectStore>,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(grace: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let mut config = EqsConfig {
        backend: BackendConfig::Embedded(EmbeddedConfig {
            path: dir.path().join("q.db"),
            max_message_bytes: INLINE,
        }),
        ..EqsConfig::default()
    };
    config.server.request_timeout = Duration::from_secs(1);
    let store_config: eos::config::BackendConfig =
        serde_yaml_ng::from_str(&format!("kind: fs\nroot: {}\n", root.display())).unwrap();
    config.large_messages = Some(LargeMessagesConfig {
        store: store_config.clone(),
        bucket: "bodies".into(),
        prefix: "lm/".into(),
        max_message_bytes: 1024 * 1024,
        sweep_every: Duration::from_secs(3600),
        sweep_grace: grace,
    });
    config.validate().unwrap();
    let inner = eqs::open_backend(
        &config.backend,
        Duration::from_secs(1),
        exo_proxy_core::metrics::Metrics::shared(),
    )
    .await
    .unwrap();
    let (outer, layer) =
        eqs::with_large_messages(inner.clone(), Arc::new(Metrics::new()), &config).await.unwrap();
    outer.ready().await.unwrap();
    // A second view of the same files, as a native reader would have.
    let context = exo_objects::services::OpenContext {
        presigner: Arc::new(exo_objects::presign::LocalPresigner::new("http://127.0.0.1", None)),
        presign_base: None,
        call_timeout: Duration::from_secs(1),
        metrics: exo_proxy_core::metrics::Metrics::shared(),
    };
    let store = store_config.open(&context).await.unwrap();
    Setup { layer: layer.unwrap(), inner, store, root, _dir: dir }
}

fn queue(name: &str) -> QueueName {
    QueueName::parse("queue", name, "q").unwrap()
}

fn bucket() -> BucketName {
    BucketName::parse("bucket", "bodies", "b").unwrap()
}

fn message(body: Vec<u8>) -> pb::OutgoingMessage {
    pb::OutgoingMessage { body, ..Default::default() }
}

fn params() -> ReceiveParams {
    ReceiveParams { max_messages: 10, wait: Duration::ZERO, visibility_seconds: Some(30) }
}

async fn create(layer: &dyn Queue, name: &str, retention_seconds: u32) -> QueueName {
    let options =
        pb::QueueOptions { visibility_timeout_seconds: Some(30), retention_seconds, ..Default::default() };
    layer.create_queue(ops::CreateQueue { queue: &queue(name), options: &options }).await.unwrap();
    queue(name)
}

fn files(root: &Path) -> usize {
    fn walk(path: &Path) -> usize {
        std::fs::read_dir(path)
            .map(|entries| {
                entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
            })
            .unwrap_or(0)
    }
    walk(root)
}

async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    let page = store
        .list(exo_objects::ops::List {
            bucket: &bucket(),
            prefix: "",
            delimiter: "",
            resume: None,
            limit: 1000,
        })
        .await
        .unwrap();
    page.objects.into_iter().map(|o| o.key).collect()
}

#[tokio::test]
async fn a_large_body_is_an_object_until_its_message_is_acked() {
    let s = setup(Duration::from_secs(3600)).await;
    let q = create(&*s.layer, "orders", 3600).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = s
        .layer
        .send(ops::Send { queue: &q, messages: vec![message(body.clone()), message(b"small".to_vec())] })
        .await
        .unwrap();
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let stored = keys(&*s.store).await;
    assert_eq!(stored.len(), 1, "one object for the one large body: {stored:?}");
    assert!(stored[0].starts_with("lm/orders/"), "{stored:?}");

    // What the queue itself holds: the extended client's reference, not the body.
    let raw = s
        .inner
        .receive(ops::Receive {
            queue: &q,
            params: ReceiveParams { visibility_seconds: Some(0), ..params() },
        })
        .await
        .unwrap();
    let reference = raw.iter().find(|m| m.body != b"small").unwrap();
    let text = String::from_utf8(reference.body.clone()).unwrap();
    assert!(text.starts_with(r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"bodies","s3Key":"lm/orders/"#), "{text}");
    assert_eq!(reference.attributes.get("ExtendedPayloadSize").map(String::as_str), Some("200000"));

    let got = s.layer.receive(ops::Receive { queue: &q, params: params() }).await.unwrap();
    assert_eq!(got.len(), 2);
    let large = got.iter().find(|m| m.body.len() == body.len()).unwrap();
    assert_eq!(large.body, body);
    assert!(large.attributes.is_empty(), "{:?}", large.attributes);
    for m in &got {
        s.layer.ack(ops::Ack { queue: &q, receipt: &m.receipt }).await.unwrap();
    }
    assert!(keys(&*s.store).await.is_empty(), "the acked message's body is still stored");
    assert_eq!(files(&s.root.join("bodies")), 0);
}

#[tokio::test]
async fn a_reference_written_by_the_extended_client_is_read_and_its_object_deleted_on_ack() {
    let s = setup(Duration::from_secs(3600)).await;
    let q = create(&*s.layer, "foreign", 3600).await;
    let body = "a body the Java client offloaded ☃".repeat(300).into_bytes();
    let bytes = bytes::Bytes::from(body.clone());
    let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
    let meta = PutMeta {
        content_type: String::new(),
        metadata: HashMap::new(),
        condition: WriteCondition::None,
        content_length: None,
        max_bytes: 0,
    };
    s.store
        .put(
            exo_objects::ops::Put { bucket: &bucket(), key: "4b8d0d33-1f0e-4f55-9d1c-1b0c7c1f0a11", meta },
            stream,
        )
        .await
        .unwrap();
    // The legacy class and attribute, spaced as Python's json.dumps writes them.
    let reference = r#"["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "bodies", "s3Key": "4b8d0d33-1f0e-4f55-9d1c-1b0c7c1f0a11"}]"#;
    let foreign = pb::OutgoingMessage {
        body: reference.as_bytes().to_vec(),
        attributes: HashMap::from([
            ("SQSLargePayloadSize".to_owned(), body.len().to_string()),
            ("origin".to_owned(), "java".to_owned()),
        ]),
        ..Default::default()
    };
    s.inner.send(ops::Send { queue: &q, messages: vec![foreign] }).await.unwrap().pop().unwrap().unwrap();
    let got = s.layer.receive(ops::Receive { queue: &q, params: params() }).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].attributes, HashMap::from([("origin".to_owned(), "java".to_owned())]));
    s.layer.ack(ops::Ack { queue: &q, receipt: &got[0].receipt }).await.unwrap();
    assert!(keys(&*s.store).await.is_empty(), "the foreign body was not deleted on ack");
}

#[tokio::test]
async fn a_reference_whose_object_is_gone_is_delivered_marked_beside_the_others() {
    let s = setup(Duration::from_secs(3600)).await;
    let q = create(&*s.layer, "lost", 3600).await;
    let sent = s
        .layer
        .send(ops::Send {
            queue: &q,
            messages: vec![message(vec![7; 10_000]), message(vec![8; 10_000]), message(b"fine".to_vec())],
        })
        .await
        .unwrap();
    assert!(sent.iter().all(Result::is_ok));
    let stored = keys(&*s.store).await;
    assert_eq!(stored.len(), 2);
    s.store
        .delete(exo_objects::ops::Delete { bucket: &bucket(), key: &stored[0], if_match: None })
        .await
        .unwrap();

    let got = s.layer.receive(ops::Receive { queue: &q, params: params() }).await.unwrap();
    assert_eq!(got.len(), 3, "one missing body must not fail or shorten the receive");
    let marked: Vec<_> = got.iter().filter(|m| m.attributes.contains_key(UNDECODABLE_ATTRIBUTE)).collect();
    assert_eq!(marked.len(), 1);
    let why = &marked[0].attributes[UNDECODABLE_ATTRIBUTE];
    assert!(why.contains(&stored[0]) && why.contains("gone"), "{why}");
    let whole = got.iter().filter(|m| m.body == vec![7; 10_000] || m.body == vec![8; 10_000]).count();
    assert_eq!(whole, 1, "the other large body must arrive whole");
    assert!(got.iter().any(|m| m.body == b"fine"));
    for m in &got {
        s.layer.ack(ops::Ack { queue: &q, receipt: &m.receipt }).await.unwrap();
    }
    assert!(s.layer.receive(ops::Receive { queue: &q, params: params() }).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_sweeper_deletes_bodies_of_expired_messages_and_keeps_the_rest() {
    let s = setup(Duration::ZERO).await;
    let short = create(&*s.layer, "short", 1).await;
    let long = create(&*s.layer, "long", 3600).await;
    // A dead-letter chain: its messages may live as long as both retentions together.
    let dlq = create(&*s.layer, "chain-dlq", 3600).await;
    let options = pb::QueueOptions {
        visibility_timeout_seconds: Some(30),
        retention_seconds: 1,
        max_receives: 1,
        dead_letter_queue: dlq.as_str().to_owned(),
        ..Default::default()
    };
    s.layer.create_queue(ops::CreateQueue { queue: &queue("chain"), options: &options }).await.unwrap();
    for q in [&short, &long, &queue("chain")] {
        s.layer
            .send(ops::Send { queue: q, messages: vec![message(vec![1; 8000])] })
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
    }
    assert_eq!(s.layer.sweep().await.unwrap(), 0, "nothing may go while its message can exist");
    // Retention 1 s + grace 0 + the request timeout 1 s.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(s.layer.sweep().await.unwrap(), 1, "only the expired message's body goes");
    let left = keys(&*s.store).await;
    assert!(
        left.iter().any(|k| k.starts_with("lm/long/")) && left.iter().any(|k| k.starts_with("lm/chain/"))
    );
    let got = s.layer.receive(ops::Receive { queue: &long, params: params() }).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, vec![1; 8000]);
    assert!(
        s.layer.receive(ops::Receive { queue: &short, params: params() }).await.unwrap().is_empty(),
        "the short message expired"
    );
}

#[test]
fn a_large_message_limit_the_backend_already_has_is_refused_at_start() {
    let text = "backend: { kind: embedded, max-message-bytes: 262144 }\n\
                large-messages: { store: { kind: memory }, bucket: bodies, max-message-bytes: 262144 }\n";
    let config: EqsConfig = exo_proxy_core::config::parse_yaml(text, "t").unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("large-messages.max-message-bytes"), "{err}");
    let text = "large-messages: { store: { kind: memory }, bucket: bodies, max-message-bytes: 16000000 }\n";
    let err = exo_proxy_core::config::parse_yaml::<EqsConfig>(text, "t").unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("server.max-request-bytes"), "{err}");
    let text = "large-messages: { store: { kind: memory }, bucket: 'Not A Bucket' }\n";
    let err = exo_proxy_core::config::parse_yaml::<EqsConfig>(text, "t").unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("large-messages.bucket"), "{err}");
}

#[tokio::test]
async fn a_bucket_deleted_by_hand_after_start_is_made_again() {
    let s = setup(Duration::from_secs(3600)).await;
    let q = create(&*s.layer, "again", 3600).await;
    s.store.delete_bucket(exo_objects::ops::DeleteBucket { bucket: &bucket() }).await.unwrap();
    s.layer
        .send(ops::Send { queue: &q, messages: vec![message(vec![3; 9000])] })
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let got = s.layer.receive(ops::Receive { queue: &q, params: params() }).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, vec![3; 9000]);
}

/// The claim-check store out (its eos proxy stopped) while a large message waits: a waiting
/// receive answers BACKEND_UNAVAILABLE (retryable) instead of an empty answer at once — an
/// empty one sets consumers polling in a tight loop — and the message stays in the queue.
#[tokio::test]
async fn a_receive_while_the_store_is_out_is_a_retryable_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    // The store: a real eos proxy (fs) reached as `remote`, as the eqs image reaches its sidecar.
    let mut eos_config = eos::config::EosConfig::default();
    eos_config.server.listen = "127.0.0.1:0".parse().unwrap();
    eos_config.backend =
        serde_yaml_ng::from_str(&format!("kind: fs\nroot: {}\n", dir.path().join("objects").display()))
            .unwrap();
    let eos = eos::EosProxy::bind(&eos_config).await.unwrap();
    let eos_addr = eos.local_addr().unwrap();
    let (stop_eos, stopped) = tokio::sync::oneshot::channel::<()>();
    let eos_task = tokio::spawn(eos.serve(async move {
        let _ = stopped.await;
    }));
    let mut config = EqsConfig {
        backend: BackendConfig::Embedded(EmbeddedConfig {
            path: dir.path().join("q.db"),
            max_message_bytes: INLINE,
        }),
        ..EqsConfig::default()
    };
    config.server.request_timeout = Duration::from_secs(2);
    config.large_messages = Some(LargeMessagesConfig {
        store: serde_yaml_ng::from_str(&format!("kind: remote\nurl: http://{eos_addr}\n")).unwrap(),
        bucket: "bodies".into(),
        prefix: "lm/".into(),
        max_message_bytes: 1024 * 1024,
        sweep_every: Duration::from_secs(3600),
        sweep_grace: Duration::from_secs(3600),
    });
    config.validate().unwrap();
    let inner = eqs::open_backend(
        &config.backend,
        Duration::from_secs(2),
        exo_proxy_core::metrics::Metrics::shared(),
    )
    .await
    .unwrap();
    let (outer, _) = eqs::with_large_messages(inner, Arc::new(Metrics::new()), &config).await.unwrap();
    for _ in 0..50 {
        if outer.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let q = create(outer.as_ref(), "held", 3600).await;
    outer
        .send(ops::Send { queue: &q, messages: vec![message(vec![9u8; 64 * 1024])] })
        .await
        .unwrap()
        .remove(0)
        .unwrap();

    let _ = stop_eos.send(());
    let _ = eos_task.await;
    let waiting =
        ReceiveParams { max_messages: 1, wait: Duration::from_secs(2), visibility_seconds: Some(30) };
    let err = outer
        .receive(ops::Receive { queue: &q, params: waiting })
        .await
        .expect_err("an empty answer while the store is out");
    assert_eq!(err.reason, exo_proto::common::v1::ErrorReason::BackendUnavailable, "{err}");
    assert!(err.retryable && err.message.contains("large-message store"), "{err}");
    // Given back: the message is still there for a receive once the store is back.
    let info = outer.queue_info(ops::QueueInfo { queue: &q }).await.unwrap();
    assert_eq!(info.visible_messages, 1, "the message was not given back at once: {info:?}");
}
