//! Subscription filters: a small declared language over message attributes, not a script.
//!
//! ```text
//! filter := clause ( "and" clause )*        (empty text: every message)
//! clause := name "=" string
//!         | name "in" "(" string ( "," string )* ")"
//!         | name "prefix" string
//!         | name "exists"
//!         | name "absent"
//! ```
//!
//! Names follow the attribute rules (`A-Z a-z 0-9 _ - .`); strings are single- or double-quoted
//! with `\` escaping the quote or itself; keywords are case-insensitive. Each attribute appears in
//! at most one clause, so every filter maps one-to-one onto an SNS filter policy (one key per
//! attribute, any-of within a key) and means the same on every backend.

use std::collections::HashMap;

use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{ExoError, ExoResult};

/// Longest filter text in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;
/// Most clauses in one filter.
pub const MAX_CLAUSES: usize = 10;
/// Most values in one `in` list.
pub const MAX_VALUES: usize = 100;

/// What one clause asks of an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// The value is one of these (`=` is a list of one).
    AnyOf(Vec<String>),
    /// The value starts with this.
    Prefix(String),
    /// The attribute is present.
    Exists,
    /// The attribute is absent.
    Absent,
}

/// One clause: an attribute and its test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The attribute name.
    pub attribute: String,
    /// What it must satisfy.
    pub test: Test,
}

/// A parsed filter: every clause must hold. No clause matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    clauses: Vec<Clause>,
}

impl Filter {
    /// Parses `text`; INVALID_FILTER names the byte position of the first problem.
    pub fn parse(text: &str) -> ExoResult<Self> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(invalid(
                0,
                &format!("is {} bytes, above the maximum {MAX_FILTER_BYTES}", text.len()),
            ));
        }
        let mut parser = Parser { text, pos: 0 };
        let mut clauses: Vec<Clause> = Vec::new();
        parser.skip_space();
        if parser.at_end() {
            return Ok(Self { clauses });
        }
        loop {
            parser.skip_space();
            let start = parser.pos;
            let clause = parser.clause()?;
            if clauses.iter().any(|c| c.attribute == clause.attribute) {
                return Err(invalid(
                    start,
                    &format!(
                        "names attribute {:?} a second time (one clause per attribute)",
                        clause.attribute
                    ),
                ));
            }
            clauses.push(clause);
            if clauses.len() > MAX_CLAUSES {
                return Err(invalid(start, &format!("has more than {MAX_CLAUSES} clauses")));
            }
            parser.skip_space();
            if parser.at_end() {
                return Ok(Self { clauses });
            }
            let at = parser.pos;
            match parser.word() {
                Some(word) if word.eq_ignore_ascii_case("and") => {}
                _ => return Err(invalid(at, "expects `and` or the end after a clause")),
            }
        }
    }

    /// The clauses, in the order written.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// The filter in its one canonical spelling: clauses sorted by attribute, `in` values sorted
    /// (by bytes) with duplicates dropped, lowercase keywords, single quotes, `=` for a one-value
    /// list. Two filters that mean the same are
    /// spelled the same, so a stored filter compares by text, and a backend that keeps a filter
    /// in its own form (an SNS filter policy) gives back the text it was given.
    pub fn canonical(&self) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut clauses: Vec<&Clause> = self.clauses.iter().collect();
        clauses.sort_by(|a, b| a.attribute.cmp(&b.attribute));
        clauses
            .into_iter()
            .map(|c| match &c.test {
                Test::AnyOf(values) => {
                    let mut values: Vec<&String> = values.iter().collect();
                    values.sort();
                    values.dedup();
                    match values.as_slice() {
                        [one] => format!("{} = {}", c.attribute, quote(one)),
                        values => format!(
                            "{} in ({})",
                            c.attribute,
                            values.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
                        ),
                    }
                }
                Test::Prefix(prefix) => format!("{} prefix {}", c.attribute, quote(prefix)),
                Test::Exists => format!("{} exists", c.attribute),
                Test::Absent => format!("{} absent", c.attribute),
            })
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// The SNS filter policy with the same meaning (message-attribute scope): one key per
    /// attribute, any-of within a key. `None` for the empty filter (no policy: everything).
    pub fn sns_policy(&self) -> Option<serde_json::Value> {
        if self.clauses.is_empty() {
            return None;
        }
        let mut policy = serde_json::Map::new();
        for clause in &self.clauses {
            let rule = match &clause.test {
                Test::AnyOf(values) => serde_json::json!(values),
                Test::Prefix(prefix) => serde_json::json!([{ "prefix": prefix }]),
                Test::Exists => serde_json::json!([{ "exists": true }]),
                Test::Absent => serde_json::json!([{ "exists": false }]),
            };
            policy.insert(clause.attribute.clone(), rule);
        }
        Some(serde_json::Value::Object(policy))
    }

    /// Reads back an SNS filter policy of the forms [`Filter::sns_policy`] writes; `None` for a
    /// policy this language cannot say (numeric matching, anything-but, nested keys: a
    /// subscription made outside the proxy).
    pub fn from_sns_policy(policy: &serde_json::Value) -> Option<Self> {
        let mut clauses = Vec::new();
        for (attribute, rule) in policy.as_object()? {
            let rules = rule.as_array()?;
            let test = match rules.as_slice() {
                [serde_json::Value::Object(only)] if only.len() == 1 => match only.iter().next()? {
                    (key, serde_json::Value::String(p)) if key == "prefix" => Test::Prefix(p.clone()),
                    (key, serde_json::Value::Bool(true)) if key == "exists" => Test::Exists,
                    (key, serde_json::Value::Bool(false)) if key == "exists" => Test::Absent,
                    _ => return None,
                },
                values if !values.is_empty() => Test::AnyOf(
                    values.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?,
                ),
                _ => return None,
            };
            clauses.push(Clause { attribute: attribute.clone(), test });
        }
        Some(Self { clauses })
    }

    /// Whether a message with `attributes` passes.
    pub fn matches(&self, attributes: &HashMap<String, String>) -> bool {
        self.clauses.iter().all(|clause| {
            let value = attributes.get(&clause.attribute);
            match (&clause.test, value) {
                (Test::AnyOf(values), Some(v)) => values.iter().any(|candidate| candidate == v),
                (Test::Prefix(prefix), Some(v)) => v.starts_with(prefix.as_str()),
                (Test::Exists, Some(_)) | (Test::Absent, None) => true,
                _ => false,
            }
        })
    }
}

/// A topic's subscriptions as the backends that filter in the proxy use them: each queue with
/// its parsed filter.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<(String, Filter)>);

impl Routes {
    /// The routes of `subscriptions`, given as (name, queue, filter). A stored filter that does not
    /// parse (a row written by hand) matches every message: its subscriber gets too much rather
    /// than losing messages, and a warning names it; the topic's other subscribers are untouched.
    pub fn new<'a>(subscriptions: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let routes = subscriptions
            .into_iter()
            .map(|(name, queue, filter)| {
                let filter = Filter::parse(filter).unwrap_or_else(|err| {
                    if first_sighting(name, filter) {
                        tracing::warn!(subscription = name, error = %err, "stored filter does not parse; delivering every message to it");
                    }
                    Filter::default()
                });
                (queue.to_owned(), filter)
            })
            .collect();
        Self(routes)
    }

    /// The queues a message with `attributes` goes to, in subscription order.
    pub fn queues<'a>(&'a self, attributes: &HashMap<String, String>) -> Vec<&'a str> {
        self.0.iter().filter(|(_, f)| f.matches(attributes)).map(|(q, _)| q.as_str()).collect()
    }
}

/// Whether this (subscription, filter) is seen unparsable for the first time in this process:
/// routes are built per publish, and one warning per bad filter is enough.
fn first_sighting(subscription: &str, filter: &str) -> bool {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let mut seen =
        SEEN.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Bounded: past this many distinct bad filters, each is warned about again.
    if seen.len() >= 1024 {
        seen.clear();
    }
    seen.insert(format!("{subscription}\u{0}{filter}"))
}

fn invalid(pos: usize, why: &str) -> ExoError {
    ExoError::new(ErrorReason::InvalidFilter, format!("filter at byte {pos}: {why}")).with_field("filter")
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos = self.text.len() - trimmed.len();
    }

    /// A run of name characters (names and keywords share them).
    fn word(&mut self) -> Option<&str> {
        self.skip_space();
        let len = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            .count();
        if len == 0 {
            return None;
        }
        let word = &self.text[self.pos..self.pos + len];
        self.pos += len;
        Some(word)
    }

    fn expect(&mut self, symbol: char, what: &str) -> ExoResult<()> {
        self.skip_space();
        if self.rest().starts_with(symbol) {
            self.pos += symbol.len_utf8();
            Ok(())
        } else {
            Err(invalid(self.pos, &format!("expects {what}")))
        }
    }

    fn string(&mut self) -> ExoResult<String> {
        self.skip_space();
        let start = self.pos;
        let quote = match self.rest().chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(invalid(start, "expects a quoted string")),
        };
        self.pos += 1;
        let mut value = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped @ ('\\' | '\'' | '"'))) => value.push(escaped),
                    _ => {
                        return Err(invalid(
                            self.pos + offset,
                            "has a backslash that escapes neither a quote nor a backslash",
                        ));
                    }
                },
                c if c == quote => {
                    self.pos += offset + 1;
                    if value.is_empty() {
                        return Err(invalid(
                            start,
                            "compares with an empty string (attribute values are never empty)",
                        ));
                    }
                    return Ok(value);
                }
                c => value.push(c),
            }
        }
        Err(invalid(start, "has a string that is never closed"))
    }

    fn clause(&mut self) -> ExoResult<Clause> {
        self.skip_space();
        let start = self.pos;
        let attribute = self.word().ok_or_else(|| invalid(start, "expects an attribute name"))?.to_owned();
        check_name(&attribute).map_err(|why| invalid(start, &why))?;
        self.skip_space();
        let at = self.pos;
        let test = if self.rest().starts_with('=') {
            self.pos += 1;
            Test::AnyOf(vec![self.string()?])
        } else {
            match self.word().map(str::to_ascii_lowercase).as_deref() {
                Some("in") => {
                    self.expect('(', "`(` after `in`")?;
                    let mut values = vec![self.string()?];
                    loop {
                        self.skip_space();
                        if self.rest().starts_with(')') {
                            self.pos += 1;
                            break;
                        }
                        self.expect(',', "`,` or `)` in the value list")?;
                        values.push(self.string()?);
                        if values.len() > MAX_VALUES {
                            return Err(invalid(at, &format!("lists more than {MAX_VALUES} values")));
                        }
                    }
                    Test::AnyOf(values)
                }
                Some("prefix") => Test::Prefix(self.string()?),
                Some("exists") => Test::Exists,
                Some("absent") => Test::Absent,
                _ => {
                    return Err(invalid(
                        at,
                        "expects `=`, `in`, `prefix`, `exists` or `absent` after the attribute name",
                    ));
                }
            }
        };
        Ok(Clause { attribute, test })
    }
}

/// The attribute-name rules (as in the queue API), minus the reserved prefixes: a filter may test
/// nothing a publisher cannot set.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 128 {
        return Err(format!("attribute name {name:?} is longer than 128 characters"));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(format!("attribute name {name:?} must not start or end with '.' or contain \"..\""));
    }
    let lower = name.to_ascii_lowercase();
    if ["exo.", "aws.", "amazon."].iter().any(|reserved| lower.starts_with(reserved)) {
        return Err(format!("attribute name {name:?} uses a reserved prefix (exo., aws., amazon.)"));
    }
    if ["and", "in", "prefix", "exists", "absent"].contains(&lower.as_str()) {
        return Err(format!("expects an attribute name, found the keyword `{name}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_clause_kind_parses_and_matches() {
        let f = Filter::parse(
            r#"type in ('order.created', "order.paid") AND region = 'eu' and customer PREFIX 'vip-'
               and priority exists and test absent"#,
        )
        .unwrap();
        assert_eq!(f.clauses().len(), 5);
        let good =
            attrs(&[("type", "order.paid"), ("region", "eu"), ("customer", "vip-7"), ("priority", "1")]);
        assert!(f.matches(&good));
        for (name, value) in [("type", "order.shipped"), ("region", "us"), ("customer", "std-7")] {
            let mut bad = good.clone();
            bad.insert(name.into(), value.into());
            assert!(!f.matches(&bad), "{name}={value}");
        }
        let mut without_priority = good.clone();
        without_priority.remove("priority");
        assert!(!f.matches(&without_priority));
        let mut with_test = good.clone();
        with_test.insert("test".into(), "yes".into());
        assert!(!f.matches(&with_test));
    }

    #[test]
    fn empty_matches_everything_and_escapes_work() {
        assert!(Filter::parse("  ").unwrap().matches(&attrs(&[])));
        let f = Filter::parse(r#"q = 'it\'s \\ "x"'"#).unwrap();
        assert!(f.matches(&attrs(&[("q", r#"it's \ "x""#)])));
        // Values compare exactly: case and whitespace matter.
        assert!(!Filter::parse("k = 'V'").unwrap().matches(&attrs(&[("k", "v")])));
    }

    #[test]
    fn canonical_spelling_and_sns_policies_round_trip() {
        let a = Filter::parse(
            r#"type IN ("x", 'it\'s') AND region = "eu" and p PREFIX 'v' and t absent and e exists"#,
        )
        .unwrap();
        let b = Filter::parse(&a.canonical()).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            a.canonical(),
            r"e exists and p prefix 'v' and region = 'eu' and t absent and type in ('it\'s', 'x')"
        );
        // The same meaning in any order, duplicates or not, is one spelling.
        let reordered = Filter::parse(
            r#"type in ('it\'s', 'x', 'x') and e exists and p prefix 'v' and region in ('eu') and t absent"#,
        )
        .unwrap();
        assert_eq!(reordered.canonical(), a.canonical());
        let policy = a.sns_policy().unwrap();
        assert_eq!(policy["type"], serde_json::json!(["x", "it's"]));
        assert_eq!(policy["t"], serde_json::json!([{ "exists": false }]));
        assert_eq!(Filter::from_sns_policy(&policy).unwrap().canonical(), a.canonical());
        assert!(Filter::parse("").unwrap().sns_policy().is_none());
        assert!(Filter::from_sns_policy(&serde_json::json!({"n": [{"numeric": [">", 1]}]})).is_none());
    }

    #[test]
    fn errors_name_the_position() {
        for (text, pos) in [
            ("region =", 8),
            ("region = 'eu' or type = 'x'", 14),
            ("region == 'eu'", 8),
            ("region = 'eu", 9),
            ("region in ('a' 'b')", 15),
            ("region matches 'x'", 7),
            ("= 'x'", 0),
            ("exo.topic exists", 0),
            ("a = 'x' and a = 'y'", 12),
            ("a = ''", 4),
            (r"a = 'x\n'", 6),
            ("and exists", 0),
        ] {
            let err = Filter::parse(text).unwrap_err();
            assert_eq!(err.reason, ErrorReason::InvalidFilter, "{text}");
            assert!(err.message.starts_with(&format!("filter at byte {pos}:")), "{text}: {}", err.message);
        }
        assert!(Filter::parse(&"a".repeat(MAX_FILTER_BYTES + 1)).is_err());
        let many = (0..=MAX_CLAUSES).map(|i| format!("a{i} exists")).collect::<Vec<_>>().join(" and ");
        assert!(Filter::parse(&many).is_err());
    }
}
