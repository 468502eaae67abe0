//! The OpenAPI document and the protos describe the same JSON: every documented property is a
//! field of the message of the same name (by its proto3 JSON name), and every field is
//! documented except the queue name, which HTTP routes take from the path.

use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::FileDescriptorSet;

#[test]
fn openapi_schemas_match_proto_messages() {
    let doc: serde_json::Value =
        serde_json::from_str(exo_proto::QUEUE_OPENAPI).expect("openapi.json is JSON");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let fds = FileDescriptorSet::decode(exo_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let queue = fds.file.iter().find(|f| f.package() == "exo.queue.v1").expect("queue proto");
    let mut checked = 0;
    for message in &queue.message_type {
        let Some(schema) = schemas.get(message.name()) else { continue };
        let documented: BTreeSet<String> =
            schema["properties"].as_object().expect("properties").keys().cloned().collect();
        let fields: BTreeSet<String> = message.field.iter().map(|f| f.json_name().to_owned()).collect();
        let path_bound: BTreeSet<String> = ["queue".to_owned()].into();
        let expected: BTreeSet<String> = fields.difference(&path_bound).cloned().collect();
        assert_eq!(documented, expected, "schema {} differs from the proto message", message.name());
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} schemas matched proto messages");
}

#[test]
fn every_exo_message_has_serde_with_proto3_json_names() {
    use exo_proto::queue::v1 as pb;
    let message =
        pb::Message { message_id: "m".into(), body: vec![0, 255], enqueued_at_ms: 7, ..Default::default() };
    let json = serde_json::to_value(&message).unwrap();
    assert_eq!(json["messageId"], "m");
    assert_eq!(json["body"], "AP8=");
    assert_eq!(json["enqueuedAtMs"], "7");
    let back: pb::Message = serde_json::from_value(json).unwrap();
    assert_eq!(back, message);
}
