//! A queue's options as metadata on the Azure queue, written at create and read back.

use super::*;

/// Queue options as Azure metadata.
pub(super) fn options_metadata(options: &pb::QueueOptions, created_at_ms: u64) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert("exovisibility", options.visibility_timeout_seconds.unwrap_or(30).to_string());
    metadata.insert("exoretention", options.retention_seconds.to_string());
    metadata.insert("exodelay", options.delay_seconds.to_string());
    metadata.insert("exomaxreceives", options.max_receives.to_string());
    // Azure metadata values cannot be empty: "-" means none.
    let dead_letter = if options.dead_letter_queue.is_empty() { "-" } else { &options.dead_letter_queue };
    metadata.insert("exodeadletter", dead_letter.to_owned());
    metadata.insert("exocreated", created_at_ms.to_string());
    metadata
}

/// A queue's options and creation time from its metadata. A queue made outside ExoFlow (by an
/// ARM template, `az storage queue create`, a native SDK) has none of it: each missing key is the
/// contract's default, never zero (a zero retention would give every message a 1 s life).
pub(super) fn options_of(metadata: &Metadata) -> QueueMetadata {
    let text = |key: &str| metadata.get(key).map(|v| String::from_utf8_lossy(&v).into_owned());
    let number = |key: &str, default: u32| text(key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(default);
    let dead_letter = text("exodeadletter").unwrap_or_default();
    QueueMetadata {
        options: pb::QueueOptions {
            visibility_timeout_seconds: Some(number("exovisibility", DEFAULT_VISIBILITY_SECONDS)),
            retention_seconds: number("exoretention", DEFAULT_RETENTION_SECONDS),
            delay_seconds: number("exodelay", 0),
            max_receives: number("exomaxreceives", 0),
            dead_letter_queue: if dead_letter == "-" { String::new() } else { dead_letter },
        },
        created_at_ms: text("exocreated").and_then(|v| v.parse().ok()).unwrap_or_default(),
        foreign: text("exovisibility").is_none(),
        total: 0,
    }
}

/// What Get Queue Metadata tells about a queue.
pub(super) struct QueueMetadata {
    pub(super) options: pb::QueueOptions,
    pub(super) created_at_ms: u64,
    /// Made outside ExoFlow: no options in its metadata (the defaults apply).
    pub(super) foreign: bool,
    /// Azure's approximate message count (visible and invisible).
    pub(super) total: usize,
}
