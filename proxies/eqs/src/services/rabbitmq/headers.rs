//! Messages as RabbitMQ carries them: attributes as headers (names the broker reads escaped),
//! foreign headers read back as text, and a delivery made into a message.

use super::*;

/// Headers RabbitMQ sets itself: never attributes.
pub(super) const BROKER_HEADERS: [&str; 9] = [
    "x-death",
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-received-from",
];

/// Prefix of the header carrying an attribute whose name the broker would read (see
/// [`broker_reads`]).
pub(super) const ESCAPED: &str = "exo.attr.";

/// Whether RabbitMQ (or one of its plugins) gives a message header of this name a meaning:
/// `CC` and `BCC` route the message (and must be arrays: a string closes the channel), and the
/// `x-` names are the broker's (`x-death`, `x-delivery-count`, `x-delay`,
/// `x-stream-filter-value`, …). An attribute with such a name travels as `exo.attr.<name>`.
pub(super) fn broker_reads(name: &str) -> bool {
    name.eq_ignore_ascii_case("cc")
        || name.eq_ignore_ascii_case("bcc")
        || name.get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-"))
}

/// The header with the time the proxy sent the message (ms; AMQP's timestamp is in seconds).
pub(super) const SENT_AT: &str = "exo.enqueued-at-ms";

/// An attribute's text from a header value, and whether it is base64 of raw bytes. Strings
/// are their UTF-8 text; numbers, booleans and timestamps their decimal text; a decimal its
/// value with the point placed; byte arrays (and strings that are not UTF-8) base64, listed
/// by the caller in `exo.base64-attributes`; arrays, tables and void JSON (see [`json_of`]).
pub(super) fn attribute_text(value: &AMQPValue) -> (String, bool) {
    match value {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (STANDARD.encode(s.as_bytes()), true),
        },
        AMQPValue::ByteArray(bytes) => (STANDARD.encode(bytes.as_slice()), true),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::Void => {
            (json_of(value).to_string(), false)
        }
        other => match json_of(other) {
            serde_json::Value::String(text) => (text, false),
            scalar => (scalar.to_string(), false),
        },
    }
}

/// A header value as JSON: strings (bytes as base64), numbers, booleans, null for void, arrays
/// and objects; a decimal as its text (`"123.45"`), so no digit is lost.
pub(super) fn json_of(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::Float(n) => J::from(f64::from(*n)),
        AMQPValue::Double(n) => J::from(*n),
        AMQPValue::DecimalValue(d) => {
            let digits = format!("{:0>width$}", d.value, width = usize::from(d.scale) + 1);
            let (whole, fraction) = digits.split_at(digits.len() - usize::from(d.scale));
            J::String(if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") })
        }
        AMQPValue::ShortString(s) => J::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => J::String(text.to_owned()),
            Err(_) => J::String(STANDARD.encode(s.as_bytes())),
        },
        AMQPValue::ByteArray(bytes) => J::String(STANDARD.encode(bytes.as_slice())),
        AMQPValue::FieldArray(items) => J::Array(items.as_slice().iter().map(json_of).collect()),
        AMQPValue::FieldTable(table) => {
            J::Object(table.inner().iter().map(|(k, v)| (k.as_str().to_owned(), json_of(v))).collect())
        }
        AMQPValue::Void => J::Null,
    }
}

pub(super) fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// The headers of an outgoing message: its attributes and the time it was sent.
pub(super) fn headers_of(attributes: HashMap<String, String>, sent_at_ms: u64) -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in attributes {
        let name = if broker_reads(&name) { format!("{ESCAPED}{name}") } else { name };
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    headers.insert(SENT_AT.into(), AMQPValue::LongLongInt(i64::try_from(sent_at_ms).unwrap_or(i64::MAX)));
    headers
}

/// A delivery in the contract's terms (its receipt is filled in by the caller).
pub(super) fn message_of(delivery: &Delivery) -> pb::Message {
    let mut attributes = HashMap::new();
    let mut binary = Vec::new();
    let mut dequeue_count = if delivery.redelivered { 2 } else { 1 };
    let mut enqueued_at_ms =
        delivery.properties.timestamp().map(|s| s.saturating_mul(1000)).unwrap_or_else(now_ms);
    if let Some(headers) = delivery.properties.headers() {
        for (name, value) in headers.inner() {
            let name = name.as_str();
            if name == "x-delivery-count" {
                if let Some(n) = integer(value) {
                    dequeue_count = u32::try_from(n.max(0)).unwrap_or(u32::MAX).saturating_add(1);
                }
            } else if name == SENT_AT {
                if let Some(n) = integer(value) {
                    enqueued_at_ms = u64::try_from(n).unwrap_or(0);
                }
            } else {
                let name = match name.strip_prefix(ESCAPED) {
                    Some(escaped) => escaped,
                    None if BROKER_HEADERS.contains(&name) || name == BASE64_ATTRIBUTES => continue,
                    None => name,
                };
                let (text, base64) = attribute_text(value);
                if base64 {
                    binary.push(name.to_owned());
                }
                attributes.insert(name.to_owned(), text);
            }
        }
    }
    if !binary.is_empty() {
        binary.sort();
        attributes.insert(BASE64_ATTRIBUTES.to_owned(), binary.join(","));
    }
    let message_id = match delivery.properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
        _ => {
            let mut digest = Sha256::new();
            digest.update(&delivery.data);
            let mut names: Vec<_> = attributes.iter().collect();
            names.sort();
            for (name, value) in names {
                digest.update(name.as_bytes());
                digest.update(value.as_bytes());
            }
            let hash = digest.finalize();
            format!("rmq-{}", hash[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    };
    pb::Message {
        message_id,
        receipt: String::new(),
        body: delivery.data.clone(),
        attributes,
        dequeue_count,
        enqueued_at_ms,
    }
}
