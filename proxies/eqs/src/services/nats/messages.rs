//! Messages as JetStream carries them: attributes as headers (escaped where NATS reads the
//! name, binary values base64), and the ack subjects a delivery names.

use super::*;

/// The header holding the contract's message id.
pub(super) const MESSAGE_ID: &str = "exo.message-id";

/// The header listing attributes whose values travel base64.
pub(super) const BASE64_VALUES: &str = "exo.base64-values";

/// Prefix of the header carrying an attribute whose name is in the server's `Nats-` namespace.
pub(super) const ESCAPED: &str = "exo.attr.";

/// Room left in the server's max_payload for the headers (names, values, framing).
pub(super) const HEADER_ALLOWANCE: u64 = 4096;

/// The two forms of a JetStream ack subject (ADR-15): the stream is token 2 of 9, or token 4 of
/// 11 and more (with domain and account hash).
pub(super) fn ack_subject_names(subject: &str) -> Option<(&str, &str)> {
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let at = if tokens.len() == 9 {
        2
    } else if tokens.len() >= 11 {
        4
    } else {
        return None;
    };
    let name_ok =
        |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let numbers_ok =
        tokens[at + 2..at + 7].iter().all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    (tokens[2..].iter().all(|t| name_ok(t)) && numbers_ok).then(|| (tokens[at], tokens[at + 1]))
}

/// The ack-subject payload that makes a delivered message visible again after `seconds` (at
/// once for 0) while it stays pending, so its receipt still acks it.
pub(super) fn nak(seconds: u32) -> String {
    if seconds == 0 {
        "-NAK".to_owned()
    } else {
        format!("-NAK {{\"delay\": {}}}", u64::from(seconds) * 1_000_000_000)
    }
}

/// Writes attributes as headers (see the module documentation).
pub(super) fn attribute_headers(headers: &mut HeaderMap, attributes: HashMap<String, String>) {
    let mut encoded = Vec::new();
    for (name, value) in attributes {
        let header = if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
            format!("{ESCAPED}{name}")
        } else {
            name.clone()
        };
        let plain = value.trim() == value && !value.contains(['\r', '\n']);
        let value = if plain {
            value
        } else {
            encoded.push(name);
            STANDARD.encode(value.as_bytes())
        };
        headers.insert(header.as_str(), value.as_str());
    }
    if !encoded.is_empty() {
        encoded.sort();
        headers.insert(BASE64_VALUES, encoded.join(",").as_str());
    }
}

/// Reads headers back into the message id (if the proxy set one) and attributes.
pub(super) fn read_headers(
    headers: Option<&HeaderMap>,
) -> (Option<String>, Option<String>, HashMap<String, String>) {
    let mut attributes = HashMap::new();
    let (mut message_id, mut nats_id) = (None, None);
    let Some(headers) = headers else { return (None, None, attributes) };
    let joined = |values: &Vec<HeaderValue>| values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(",");
    let mut encoded: Vec<String> = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name == MESSAGE_ID {
            message_id = Some(joined(values));
        } else if name == BASE64_VALUES {
            encoded = joined(values).split(',').map(str::to_owned).collect();
        } else if name.eq_ignore_ascii_case("Nats-Msg-Id") {
            nats_id = Some(joined(values));
        } else if let Some(escaped) = name.strip_prefix(ESCAPED) {
            attributes.insert(escaped.to_owned(), joined(values));
        } else if !(name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")) {
            attributes.insert(name.to_owned(), joined(values));
        }
    }
    for name in encoded {
        if let Some(value) = attributes.get_mut(&name)
            && let Some(text) = STANDARD.decode(value.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok())
        {
            *value = text;
        }
    }
    (message_id, nats_id, attributes)
}
