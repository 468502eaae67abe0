//! Validated values shared by the API layer and the backends: keys, limits, capabilities,
//! conditions.

use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, ResourceName};

pub use pb::KvCapability as Capability;

/// A table name that passed the portable rules.
pub type TableName = ResourceName;

/// What a backend is and can do (see [`exo_proxy_core::Descriptor`]).
pub type Descriptor = exo_proxy_core::Descriptor<Capability, pb::Limits>;

/// The portable limits: DynamoDB's 400 KB item and Azure Table's 64 KiB-per-property leave
/// 256 KiB as a value every backend can hold (Azure splits it across properties).
pub fn portable_limits() -> pb::Limits {
    pb::Limits {
        max_key_bytes: 1024,
        max_value_bytes: 256 * 1024,
        max_batch_keys: 100,
        max_page_size: 1000,
        max_ttl_seconds: 365 * 24 * 3600,
        // DynamoDB's TransactWriteItems and Azure Table's entity-group transactions both take
        // 100 writes; 1 MiB of values stays far inside their 4 MB requests.
        max_batch_writes: 100,
        max_batch_bytes: 1024 * 1024,
    }
}

/// A write precondition, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    None,
    /// The key must be absent (or expired).
    MustNotExist,
    /// The current version must equal this.
    VersionEquals(String),
}

impl Condition {
    /// Checks the condition against the current version of a key (`None` if absent or expired).
    pub fn check(&self, current: Option<&str>, table: &str, key: &str) -> ExoResult<()> {
        let holds = match (self, current) {
            (Condition::None, _) => true,
            (Condition::MustNotExist, current) => current.is_none(),
            (Condition::VersionEquals(want), Some(have)) => want == have,
            (Condition::VersionEquals(_), None) => false,
        };
        if holds {
            return Ok(());
        }
        let why = match (self, current) {
            (Condition::MustNotExist, _) => "the key already exists".to_owned(),
            (Condition::VersionEquals(_), None) => "the key does not exist".to_owned(),
            (Condition::VersionEquals(want), Some(have)) => format!("version is {have}, not {want}"),
            (Condition::None, _) => String::new(),
        };
        Err(ExoError::new(ErrorReason::ConditionFailed, format!("condition failed for key {key:?}: {why}"))
            .with_resource(format!("{table}/{key}")))
    }
}

/// One write of a batch, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key (distinct within its batch).
    pub key: String,
    /// What to do to it.
    pub change: Change,
    /// Its precondition (never `MustNotExist` for a delete).
    pub condition: Condition,
}

/// A put or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store `value`, expiring at `expires_at_ms` (0: never).
    Put { value: Vec<u8>, expires_at_ms: u64 },
    /// Remove the key.
    Delete,
}

impl Write {
    /// Checks the write's condition against the key's current version (`None`: absent or
    /// expired); a failure names the write (`writes[index]`).
    pub fn check(&self, index: usize, current: Option<&str>, table: &str) -> ExoResult<()> {
        self.condition
            .check(current, table, &self.key)
            .map_err(|err| err.with_field(format!("writes[{index}]")))
    }
}

/// A new opaque version: time-ordered and unique.
pub fn new_version() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// TABLE_NOT_FOUND for `table`.
pub fn table_not_found(table: &str) -> ExoError {
    ExoError::new(ErrorReason::TableNotFound, format!("table '{table}' does not exist")).with_resource(table)
}

/// KEY_NOT_FOUND for `key` in `table`.
pub fn key_not_found(table: &str, key: &str) -> ExoError {
    ExoError::new(ErrorReason::KeyNotFound, format!("key {key:?} does not exist in table '{table}'"))
        .with_resource(format!("{table}/{key}"))
}

/// Counters: a counter's value is the decimal text of a 64-bit signed integer in its shortest
/// form (`0`, `42`, `-7`: no sign on positives, no leading zeros, no spaces), the form Redis's
/// `INCRBY` reads and writes, so `Get` and a store's own clients read a counter as text.
pub mod counter {
    use super::*;

    /// The counter `value` holds; NOT_A_COUNTER when it is anything else.
    pub fn parse(value: &[u8], table: &str, key: &str) -> ExoResult<i64> {
        let canonical = match value {
            [b'0'] => true,
            [b'-', first, rest @ ..] | [first @ b'1'..=b'9', rest @ ..] if first.is_ascii_digit() => {
                *first != b'0' && rest.iter().all(u8::is_ascii_digit)
            }
            _ => false,
        };
        let parsed = std::str::from_utf8(value).ok().filter(|_| canonical).and_then(|text| text.parse().ok());
        parsed.ok_or_else(|| {
            let shown = String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned();
            ExoError::new(
                ErrorReason::NotACounter,
                format!(
                    "key {key:?} holds {shown:?}, not a counter (the decimal text of a 64-bit signed integer); nothing was written"
                ),
            )
            .with_resource(format!("{table}/{key}"))
        })
    }

    /// `current + delta`; COUNTER_OVERFLOW past the 64-bit signed range.
    pub fn add(current: i64, delta: i64, table: &str, key: &str) -> ExoResult<i64> {
        current.checked_add(delta).ok_or_else(|| overflow(current, delta, table, key))
    }

    /// COUNTER_OVERFLOW for adding `delta` to `current`.
    pub fn overflow(current: i64, delta: i64, table: &str, key: &str) -> ExoError {
        ExoError::new(
            ErrorReason::CounterOverflow,
            format!("adding {delta} to the counter {key:?} at {current} leaves the 64-bit signed range; nothing was written"),
        )
        .with_resource(format!("{table}/{key}"))
    }

    /// The value a counter at `n` is stored as.
    pub fn text(n: i64) -> Vec<u8> {
        n.to_string().into_bytes()
    }

    /// The counter after adding `delta` to the value `current` (`None`: absent, counts from 0).
    pub fn incremented(current: Option<&[u8]>, delta: i64, table: &str, key: &str) -> ExoResult<i64> {
        match current {
            None => Ok(delta),
            Some(value) => add(parse(value, table, key)?, delta, table, key),
        }
    }
}

/// Whether an entry with expiry `expires_at_ms` (0 = never) is expired at `now_ms`.
pub fn expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && expires_at_ms <= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert!(Condition::None.check(None, "t", "k").is_ok());
        assert!(Condition::MustNotExist.check(None, "t", "k").is_ok());
        assert_eq!(
            Condition::MustNotExist.check(Some("v1"), "t", "k").unwrap_err().reason,
            ErrorReason::ConditionFailed
        );
        assert!(Condition::VersionEquals("v1".into()).check(Some("v1"), "t", "k").is_ok());
        assert!(Condition::VersionEquals("v1".into()).check(Some("v2"), "t", "k").is_err());
        assert!(Condition::VersionEquals("v1".into()).check(None, "t", "k").is_err());
    }

    #[test]
    fn counters_have_one_form() {
        for (text, n) in [
            ("0", 0),
            ("42", 42),
            ("-7", -7),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(counter::parse(text.as_bytes(), "t", "k").unwrap(), n, "{text}");
            assert_eq!(counter::text(n), text.as_bytes());
        }
        for text in
            ["", "-", "-0", "007", "+5", " 5", "5 ", "1.5", "1e3", "abc", "9223372036854775808", "\u{ff}"]
        {
            assert_eq!(
                counter::parse(text.as_bytes(), "t", "k").unwrap_err().reason,
                ErrorReason::NotACounter,
                "{text:?}"
            );
        }
        assert_eq!(counter::parse(b"\xff", "t", "k").unwrap_err().reason, ErrorReason::NotACounter);
        assert_eq!(counter::add(i64::MAX, 1, "t", "k").unwrap_err().reason, ErrorReason::CounterOverflow);
        assert_eq!(counter::add(i64::MIN, -1, "t", "k").unwrap_err().reason, ErrorReason::CounterOverflow);
        assert_eq!(counter::incremented(None, -3, "t", "k").unwrap(), -3);
        assert_eq!(counter::incremented(Some(b"10"), -3, "t", "k").unwrap(), 7);
    }

    #[test]
    fn expiry() {
        assert!(!expired(0, u64::MAX));
        assert!(expired(10, 10));
        assert!(!expired(11, 10));
    }
}
