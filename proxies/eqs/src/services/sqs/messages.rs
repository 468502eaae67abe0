//! Messages and receipts as SQS carries them: bodies SQS cannot hold as text encoded, receipts
//! bound to their queue, and sends cut into batches SQS takes.

use super::*;

/// `body` as SQS text and the encoding attribute it needs, if any.
pub(super) fn encode_body(body: &[u8]) -> (String, Option<&'static str>) {
    if body.is_empty() {
        return ("-".to_owned(), Some("empty"));
    }
    match std::str::from_utf8(body) {
        Ok(text) if text.chars().all(sqs_text_char) => (text.to_owned(), None),
        _ => (STANDARD.encode(body), Some("base64")),
    }
}

/// Characters SQS accepts in a body (#x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF).
pub(super) fn sqs_text_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A received SQS body back to the bytes that were sent; `Err` says why it cannot be (a foreign
/// producer's message marked with an encoding it does not follow).
pub(super) fn decode_body(body: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(body.as_bytes().to_vec()),
        Some("empty") if body == "-" => Ok(Vec::new()),
        // A foreign producer's body must not vanish behind a marker it did not mean.
        Some("empty") => {
            Err(format!("marked {ENCODING_ATTRIBUTE}=empty but the body is not the placeholder '-'"))
        }
        Some("base64") => STANDARD.decode(body).map_err(|e| {
            format!("marked {ENCODING_ATTRIBUTE}=base64 but the body is not standard base64 ({e})")
        }),
        Some(other) => Err(format!(
            "marked with an unknown {ENCODING_ATTRIBUTE} '{}'",
            other.chars().take(64).collect::<String>()
        )),
    }
}

pub(super) fn encode_receipt(queue: &QueueName, handle: &str) -> String {
    format!("{RECEIPT_PREFIX}{queue}:{handle}")
}

pub(super) fn decode_receipt<'a>(receipt: &'a str, queue: &QueueName) -> ExoResult<&'a str> {
    let invalid = |why: String| {
        ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
            .with_field("receipt")
            .with_resource(queue.as_str())
    };
    let rest = receipt.strip_prefix(RECEIPT_PREFIX).ok_or_else(|| invalid("not a receipt token".into()))?;
    let (owner, handle) = rest.split_once(':').ok_or_else(|| invalid("not a receipt token".into()))?;
    if owner != queue.as_str() {
        return Err(invalid(format!("it was issued by queue '{owner}', not '{queue}'")));
    }
    if handle.is_empty() {
        return Err(invalid("not a receipt token".into()));
    }
    Ok(handle)
}

pub(super) fn entry(
    index: usize,
    message: pb::OutgoingMessage,
) -> ExoResult<(SendMessageBatchRequestEntry, usize)> {
    let (body, encoding) = encode_body(&message.body);
    let mut size = body.len();
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
        .set_delay_seconds(message.delay_seconds.map(|d| d as i32));
    let string = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| ExoError::internal(format!("cannot build an SQS attribute: {e}")))
    };
    // BTreeMap: a stable attribute order keeps requests reproducible.
    for (key, value) in message.attributes.into_iter().collect::<BTreeMap<_, _>>() {
        size += key.len() + value.len() + "String".len();
        builder = builder.message_attributes(&key, string(&value)?);
    }
    if let Some(encoding) = encoding {
        size += ENCODING_ATTRIBUTE.len() + encoding.len() + "String".len();
        builder = builder.message_attributes(ENCODING_ATTRIBUTE, string(encoding)?);
    }
    let entry = builder.build().map_err(|e| ExoError::internal(format!("cannot build an SQS entry: {e}")))?;
    Ok((entry, size))
}

/// Cuts `(entry, size)` pairs into SendMessageBatch calls of at most 10 entries and 1 MiB.
pub(super) fn chunked<E>(entries: Vec<(E, usize)>) -> Vec<Vec<E>> {
    chunk_by(entries, SQS_BATCH, SQS_MAX_BYTES)
}

/// Cuts `(entry, bytes)` into calls of at most `max_entries` entries and `max_bytes` bytes, in
/// order (an entry larger than `max_bytes` goes alone).
pub(super) fn chunk_by<E>(entries: Vec<(E, usize)>, max_entries: usize, max_bytes: usize) -> Vec<Vec<E>> {
    let mut chunks: Vec<Vec<E>> = Vec::new();
    let mut chunk_bytes = 0;
    for (entry, size) in entries {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < max_entries && chunk_bytes + size <= max_bytes => chunk.push(entry),
            _ => {
                chunk_bytes = 0;
                chunks.push(vec![entry]);
            }
        }
        chunk_bytes += size;
    }
    chunks
}

/// Entry ids are their index within the SQS call, so results map back by position.
pub(super) fn renumber(entries: Vec<SendMessageBatchRequestEntry>) -> Vec<SendMessageBatchRequestEntry> {
    entries
        .into_iter()
        .enumerate()
        .map(|(index, mut entry)| {
            entry.id = index.to_string();
            entry
        })
        .collect()
}
