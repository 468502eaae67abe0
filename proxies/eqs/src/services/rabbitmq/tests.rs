//! Tests of the RabbitMQ backend's own logic (the broker-facing behaviour is tested by the conformance
//! suite and scripts/rabbitmq_interop.py).

#[test]
fn a_queue_whose_home_node_is_down_is_the_broker_recovering() {
    // As RabbitMQ answers for 0.1-0.5 s after a killed node is back.
    assert!(super::recovering_text(
        "protocol error: AMQP soft error: NOT-FOUND: NOT_FOUND - home node 'rabbit@host' of durable queue \
         'ci._registry' in vhost 'v' is down or inaccessible"
    ));
    assert!(!super::recovering_text("NOT_FOUND - no queue 'ci.orders' in vhost 'v'"));
}

use super::*;

#[test]
fn receipts_round_trip_and_are_bound_to_their_queue() {
    let orders = QueueName::parse("queue", "orders", "q").unwrap();
    let other = QueueName::parse("queue", "other", "q").unwrap();
    let token = Receipt { instance: 0xabc, receiver: 7, tag: 42 }.encode("orders");
    let back = Receipt::decode(&token, &orders).unwrap();
    assert_eq!((back.instance, back.receiver, back.tag), (0xabc, 7, 42));
    assert_eq!(Receipt::decode(&token, &other).err().map(|e| e.reason), Some(ErrorReason::InvalidReceipt));
    for junk in ["", "???", "cjEuMS4y"] {
        assert_eq!(Receipt::decode(junk, &orders).err().map(|e| e.reason), Some(ErrorReason::InvalidReceipt));
    }
}

#[test]
fn broker_headers_are_not_attributes_and_attributes_of_their_names_survive() {
    let attributes = HashMap::from([
        ("kind".to_owned(), "order".to_owned()),
        ("x-death".to_owned(), "not the broker's".to_owned()),
    ]);
    let mut headers = headers_of(attributes.clone(), 1234);
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
    headers.insert("x-first-death-queue".into(), AMQPValue::LongString("eqs.src".into()));
    let mut delivery = Delivery::mock(1, "".into(), "eqs.q".into(), false, b"body".to_vec());
    delivery.properties = BasicProperties::default().with_headers(headers).with_message_id("id-1".into());
    let message = message_of(&delivery);
    assert_eq!(message.attributes, attributes);
    assert_eq!(message.dequeue_count, 3);
    assert_eq!(message.enqueued_at_ms, 1234);
    assert_eq!(message.message_id, "id-1");
}

#[test]
fn settings_are_checked() {
    assert!(RabbitMqQueueConfig::default().check().is_ok());
    for bad in [
        RabbitMqQueueConfig { url: "http://x".into(), ..Default::default() },
        RabbitMqQueueConfig { namespace: "a.b".into(), ..Default::default() },
        RabbitMqQueueConfig { max_message_bytes: 0, ..Default::default() },
        // A CA file on a plain amqp:// URL, and a CA file that is not there.
        RabbitMqQueueConfig { ca_file: Some(std::env::current_exe().unwrap()), ..Default::default() },
        RabbitMqQueueConfig {
            url: "amqps://guest@localhost:5671/%2f".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
    let amqps = RabbitMqQueueConfig {
        url: "amqps://guest@localhost:5671/%2f".into(),
        ca_file: Some(std::env::current_exe().unwrap()),
        ..Default::default()
    };
    assert!(amqps.check().is_ok());
}
