//! Portable resource names (queues, buckets, tables): the intersection of what SQS, S3, Azure
//! Storage Queue, Blob containers and Azure Table accept, so a name valid here is valid on every
//! backend (Azure Table's stricter alphanumeric rule is met by the backend's name mapping).

use std::fmt;

use exo_proto::common::v1::ErrorReason;

use crate::{ExoError, ExoResult};

/// A validated name: 3 to 63 characters of `a-z`, `0-9` and `-`, starting and ending with a
/// letter or digit, without `--`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName(String);

impl ResourceName {
    /// Validates `name`; `kind` ("queue", "bucket", "table") and `field` go into the error.
    pub fn parse(kind: &str, name: &str, field: &str) -> ExoResult<Self> {
        let problem = if name.len() < 3 || name.len() > 63 {
            Some("must be 3 to 63 characters long")
        } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            Some("may contain only lowercase letters, digits and '-'")
        } else if name.starts_with('-') || name.ends_with('-') {
            Some("must start and end with a letter or digit")
        } else if name.contains("--") {
            Some("must not contain \"--\"")
        } else {
            None
        };
        match problem {
            None => Ok(Self(name.to_owned())),
            Some(why) => Err(ExoError::new(ErrorReason::InvalidName, format!("{kind} name {name:?} {why}"))
                .with_field(field)
                .with_resource(name)),
        }
    }

    /// Checks a listing prefix: the characters names may contain, at most 63 of them.
    pub fn check_prefix(prefix: &str, field: &str) -> ExoResult<()> {
        if prefix.len() > 63
            || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ExoError::invalid_argument(
                field,
                "prefix may contain only lowercase letters, digits and '-' (at most 63)",
            ));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_names() {
        for good in ["abc", "orders-v2", "a1b", &"x".repeat(63)] {
            ResourceName::parse("queue", good, "name").unwrap();
        }
        for bad in ["ab", "Orders", "a_b", "-ab", "ab-", "a--b", "a.b", "ä-b", &"x".repeat(64), ""] {
            let err = ResourceName::parse("bucket", bad, "name").unwrap_err();
            assert_eq!(err.reason, ErrorReason::InvalidName, "{bad}");
            assert!(err.message.starts_with("bucket name"), "{}", err.message);
        }
    }
}
