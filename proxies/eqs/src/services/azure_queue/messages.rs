//! Messages as Azure Queue Storage carries them: the envelope (body, attributes, dequeue
//! bookkeeping) in the message text, receipts bound to their queue, and the XML of a receive.

use super::*;

pub(super) const ENVELOPE: &str = "exo1.";

pub(super) const RECEIPT_PREFIX: &str = "az1:";

/// A message as the proxy stores it in Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Envelope {
    pub(super) body: Vec<u8>,
    pub(super) attributes: HashMap<String, String>,
    /// The id the message had before it was dead-lettered.
    pub(super) original_id: Option<String>,
}

impl Envelope {
    pub(super) fn encode(&self) -> String {
        let mut text = String::from(ENVELOPE);
        text.push_str(&URL_SAFE_NO_PAD.encode(&self.body));
        let mut attributes: Vec<_> = self.attributes.iter().collect();
        attributes.sort();
        for (name, value) in attributes {
            text.push_str(".a");
            text.push_str(&URL_SAFE_NO_PAD.encode(name));
            text.push('=');
            text.push_str(&URL_SAFE_NO_PAD.encode(value));
        }
        if let Some(id) = &self.original_id {
            text.push_str(".i");
            text.push_str(&URL_SAFE_NO_PAD.encode(id));
        }
        text
    }

    /// A stored text back into a message. A native producer's plain text is its own body; a text
    /// that starts like an envelope but is not one is delivered as its bytes, marked
    /// [`UNDECODABLE_ATTRIBUTE`], so it never blocks the queue. Base64url is accepted with or
    /// without padding (Python's `urlsafe_b64encode` pads).
    pub(super) fn decode(text: &str) -> Self {
        let Some(rest) = text.strip_prefix(ENVELOPE) else {
            return Envelope {
                body: text.as_bytes().to_vec(),
                attributes: HashMap::new(),
                original_id: None,
            };
        };
        Self::decode_envelope(rest).unwrap_or_else(|why| Envelope {
            body: text.as_bytes().to_vec(),
            attributes: [(
                UNDECODABLE_ATTRIBUTE.to_owned(),
                format!("the text starts with '{ENVELOPE}' but is not an ExoFlow envelope: {why}"),
            )]
            .into(),
            original_id: None,
        })
    }

    pub(super) fn decode_envelope(rest: &str) -> Result<Self, String> {
        let bytes = |part: &str, what: &str| {
            BASE64URL_ANY_PADDING.decode(part).map_err(|e| format!("{what} is not base64url ({e})"))
        };
        let text = |part: &str, what: &str| {
            String::from_utf8(bytes(part, what)?).map_err(|_| format!("{what} is not UTF-8"))
        };
        let mut parts = rest.split('.');
        let body = bytes(parts.next().unwrap_or_default(), "the body")?;
        let mut envelope = Envelope { body, attributes: HashMap::new(), original_id: None };
        for part in parts {
            if let Some(pair) = part.strip_prefix('a') {
                // With padded base64 the separator is the '=' after the name's padding: take the
                // first split at which both sides decode.
                let (name, value) = pair
                    .match_indices('=')
                    .find_map(|(at, _)| Some((text(&pair[..at], "").ok()?, text(&pair[at + 1..], "").ok()?)))
                    .ok_or("an attribute is not base64url name '=' base64url value")?;
                envelope.attributes.insert(name, value);
            } else if let Some(id) = part.strip_prefix('i') {
                envelope.original_id = Some(text(id, "the original id")?);
            } else {
                return Err(format!("unknown part '{}'", part.chars().take(16).collect::<String>()));
            }
        }
        Ok(envelope)
    }
}

/// Base64url that decodes with or without `=` padding (the proxy writes none).
pub(super) const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn encode_receipt(queue: &QueueName, message_id: &str, pop_receipt: &str) -> String {
    format!("{RECEIPT_PREFIX}{queue}:{message_id}:{pop_receipt}")
}

pub(super) fn decode_receipt<'a>(receipt: &'a str, queue: &QueueName) -> ExoResult<(&'a str, &'a str)> {
    let invalid = |why: String| {
        ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
            .with_field("receipt")
            .with_resource(queue.as_str())
    };
    let rest = receipt.strip_prefix(RECEIPT_PREFIX).ok_or_else(|| invalid("not a receipt token".into()))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(owner), Some(id), Some(pop)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("not a receipt token".into()));
    };
    if owner != queue.as_str() {
        return Err(invalid(format!("it was issued by queue '{owner}', not '{queue}'")));
    }
    if id.is_empty() || pop.is_empty() {
        return Err(invalid("not a receipt token".into()));
    }
    Ok((id, pop))
}

/// One message of a Get Messages answer, its text exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReceivedText {
    pub(super) message_id: String,
    pub(super) pop_receipt: String,
    pub(super) inserted_at_ms: u64,
    pub(super) dequeue_count: u32,
    pub(super) text: String,
}

/// Reads a `QueueMessagesList` keeping every character of `MessageText` (whitespace included).
pub(super) fn parse_messages(xml: &[u8]) -> azure_core::Result<Vec<ReceivedText>> {
    use quick_xml::events::Event;
    let invalid = |why: String| {
        azure_core::Error::message(
            azure_core::error::ErrorKind::DataConversion,
            format!("Get Messages answered XML the proxy cannot read: {why}"),
        )
    };
    let xml = std::str::from_utf8(xml.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(xml))
        .map_err(|_| invalid("not UTF-8".into()))?;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut messages = Vec::new();
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut element: Option<String> = None;
    loop {
        match reader.read_event().map_err(|e| invalid(e.to_string()))? {
            Event::Start(start) => {
                let tag = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if tag == "QueueMessage" {
                    fields.clear();
                }
                element = Some(tag);
            }
            Event::Text(text) => {
                if let Some(tag) = &element {
                    let text = text.unescape().map_err(|e| invalid(e.to_string()))?;
                    fields.entry(tag.clone()).or_default().push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(tag) = &element {
                    let text = String::from_utf8(data.into_inner().into_owned())
                        .map_err(|_| invalid("CDATA is not UTF-8".into()))?;
                    fields.entry(tag.clone()).or_default().push_str(&text);
                }
            }
            Event::End(end) => {
                element = None;
                if end.local_name().as_ref() == b"QueueMessage" {
                    let mut take = |key: &str| fields.remove(key).unwrap_or_default();
                    let inserted = take("InsertionTime");
                    let message = ReceivedText {
                        message_id: take("MessageId"),
                        pop_receipt: take("PopReceipt"),
                        inserted_at_ms: azure_core::date::parse_rfc1123(inserted.trim())
                            .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
                            .unwrap_or_default(),
                        dequeue_count: take("DequeueCount").trim().parse().unwrap_or_default(),
                        text: take("MessageText"),
                    };
                    if message.message_id.is_empty() || message.pop_receipt.is_empty() {
                        return Err(invalid("a message without id or pop receipt".into()));
                    }
                    messages.push(message);
                }
            }
            Event::Eof => return Ok(messages),
            _ => {}
        }
    }
}
