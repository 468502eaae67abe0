//! Every service, method, message, field, enum and enum value of the contract is documented
//! (a leading comment in the .proto), so generated code and API docs never leave a user guessing.

use std::collections::HashSet;

use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorSet};

fn collect_messages(
    prefix: &[i32],
    messages: &[DescriptorProto],
    name: &str,
    out: &mut Vec<(Vec<i32>, String)>,
) {
    for (i, message) in messages.iter().enumerate() {
        // Map entries are synthesized by protoc for `map<,>` fields, which are documented themselves.
        if message.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(i as i32);
        let full = format!("{name}.{}", message.name());
        out.push((path.clone(), full.clone()));
        for (j, field) in message.field.iter().enumerate() {
            let mut field_path = path.clone();
            field_path.extend([2, j as i32]);
            out.push((field_path, format!("{full}.{}", field.name())));
        }
        let mut nested = path.clone();
        nested.push(3);
        collect_messages(&nested, &message.nested_type, &full, out);
    }
}

#[test]
fn every_element_of_the_contract_is_documented() {
    let fds = FileDescriptorSet::decode(exo_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut missing = Vec::new();
    for file in fds.file.iter().filter(|f| f.package().starts_with("exo.")) {
        let info = file.source_code_info.as_ref().expect("descriptor set keeps source info");
        let documented: HashSet<Vec<i32>> = info
            .location
            .iter()
            .filter(|l| l.leading_comments.as_deref().is_some_and(|c| !c.trim().is_empty()))
            .map(|l| l.path.clone())
            .collect();
        let mut elements = Vec::new();
        collect_messages(&[4], &file.message_type, file.package(), &mut elements);
        for (i, e) in file.enum_type.iter().enumerate() {
            elements.push((vec![5, i as i32], format!("{}.{}", file.package(), e.name())));
            for (j, v) in e.value.iter().enumerate() {
                // The zero value of an enum is the conventional UNSPECIFIED and needs no prose.
                if v.number() != 0 {
                    elements.push((vec![5, i as i32, 2, j as i32], format!("{}.{}", e.name(), v.name())));
                }
            }
        }
        for (i, s) in file.service.iter().enumerate() {
            elements.push((vec![6, i as i32], format!("{}.{}", file.package(), s.name())));
            for (j, m) in s.method.iter().enumerate() {
                elements.push((vec![6, i as i32, 2, j as i32], format!("{}.{}", s.name(), m.name())));
            }
        }
        for (path, name) in elements {
            if !documented.contains(&path) {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "{} undocumented proto elements:\n{}", missing.len(), missing.join("\n"));
}
