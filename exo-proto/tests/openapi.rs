//! The OpenAPI document and the protos describe the same JSON: every documented property is a
//! field of the message of the same name (by its proto3 JSON name), and every field is
//! documented except those the request's HTTP route takes from its path.

use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::FileDescriptorSet;

#[test]
fn openapi_schemas_match_proto_messages() {
    let doc: serde_json::Value = serde_json::from_str(exo_proto::OPENAPI).expect("openapi.json is JSON");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let fds = FileDescriptorSet::decode(exo_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    // (package, prefix of its schema names where they would clash, names another package owns)
    let packages = [
        ("exo.queue.v1", "", vec![]),
        ("exo.kv.v1", "Kv", vec!["Limits", "DescribeResponse"]),
        (
            "exo.object.v1",
            "Object",
            // Names kv also uses: the unprefixed schema is kv's.
            vec![
                "Limits",
                "DescribeResponse",
                "Condition",
                "PutRequest",
                "PutResponse",
                "GetRequest",
                "GetResponse",
                "DeleteRequest",
                "DeleteResponse",
                "ListRequest",
                "ListResponse",
            ],
        ),
    ];
    let mut checked = 0;
    for (package, clash_prefix, clashing) in packages {
        let file = fds.file.iter().find(|f| f.package() == package).expect("proto file");
        for message in &file.message_type {
            let prefixed = format!("{clash_prefix}{}", message.name());
            let schema = match schemas.get(&prefixed) {
                Some(schema) => schema,
                // Unprefixed names belong to this package unless another package claims them.
                None if !clashing.contains(&message.name()) => match schemas.get(message.name()) {
                    Some(schema) => schema,
                    None => continue,
                },
                None => continue,
            };
            let documented: BTreeSet<String> =
                schema["properties"].as_object().expect("properties").keys().cloned().collect();
            let fields: BTreeSet<String> = message.field.iter().map(|f| f.json_name().to_owned()).collect();
            let path_bound = path_parameters(&doc, &prefixed_or_plain(schemas, &prefixed, message.name()));
            let expected: BTreeSet<String> = fields.difference(&path_bound).cloned().collect();
            assert_eq!(
                documented,
                expected,
                "schema for {package}.{} differs from the proto message",
                message.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 48, "only {checked} schemas matched proto messages");
}

/// The schema name a message is documented under (the prefixed one where it exists).
fn prefixed_or_plain(
    schemas: &serde_json::Map<String, serde_json::Value>,
    prefixed: &str,
    plain: &str,
) -> String {
    if schemas.contains_key(prefixed) { prefixed.to_owned() } else { plain.to_owned() }
}

/// The path parameters of every route whose JSON body is `schema`: the request fields the
/// route takes from its path instead of its body.
fn path_parameters(doc: &serde_json::Value, schema: &str) -> BTreeSet<String> {
    let target = format!("#/components/schemas/{schema}");
    let mut names = BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            if op["requestBody"]["content"]["application/json"]["schema"]["$ref"] != target.as_str() {
                continue;
            }
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    names.insert(parameter["name"].as_str().expect("parameter name").to_owned());
                }
            }
        }
    }
    names
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
