//! Object names as GCS stores them: keys escaped where GCS cannot hold them, and read back.

use super::*;

/// What the JSON API's path segments escape: everything but unreserved characters.
pub(super) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub(super) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// The stored name of a key (see the module docs on escaping).
pub(super) fn stored_name(key: &str) -> String {
    match key {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ if is_escape(key) => format!("%25{key}"),
        _ => key.to_owned(),
    }
}

/// The key a stored name holds.
pub(super) fn key_of(name: &str) -> String {
    match name {
        "%2E" => ".".into(),
        "%2E%2E" => "..".into(),
        _ if is_escape(name) => name["%25".len()..].to_owned(),
        _ => name.to_owned(),
    }
}

/// `(%25)*%2E` or `(%25)*%2E%2E`.
pub(super) fn is_escape(name: &str) -> bool {
    let mut rest = name;
    while let Some(next) = rest.strip_prefix("%25") {
        rest = next;
    }
    rest == "%2E" || rest == "%2E%2E"
}
