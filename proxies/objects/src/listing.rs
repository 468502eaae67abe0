//! Listing with prefix, delimiter and page tokens, written once for every backend that can seek
//! its keys in byte order. A page token records where the previous page stopped — strictly
//! after its last key, or past every key under its last common prefix — so keys inserted or
//! deleted between pages never cause repeats, and keys present throughout are never skipped.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use exo_proto::object::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult};
use exo_sqlite::prefix_successor;

/// Marks a page token that carries a backend's continuation token.
const CONTINUATION: u8 = 0xFF;

/// Where a listing resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The lowest key (as bytes) that may still be listed.
    pub lower: Vec<u8>,
    /// Whether `lower` itself may be listed.
    pub inclusive: bool,
}

impl Resume {
    /// Encodes as an opaque page token.
    pub fn token(&self) -> String {
        let mut raw = vec![u8::from(self.inclusive)];
        raw.extend_from_slice(&self.lower);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// A resume point carrying a backend's own continuation token (S3's, Azure's marker): 0xFF,
    /// which never occurs in UTF-8 keys, marks it.
    pub fn continuation(token: &str) -> Self {
        let mut lower = vec![CONTINUATION];
        lower.extend_from_slice(token.as_bytes());
        Self { lower, inclusive: false }
    }

    /// The backend continuation token this resume point carries; INVALID_ARGUMENT if it carries
    /// none (a backend that pages by its own tokens never issued it).
    pub fn continuation_token(&self) -> ExoResult<String> {
        let bad = || ExoError::invalid_argument("page_token", "page_token is not one this server issued");
        match self.lower.split_first() {
            Some((&CONTINUATION, token)) => String::from_utf8(token.to_vec()).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// Decodes a page token. Any base64url token is a position (one this server did not issue
    /// resumes there); a backend paging by its own tokens still refuses one it did not issue.
    pub fn from_token(token: &str) -> ExoResult<Self> {
        let raw = exo_proxy_core::json::page_token_bytes(token)?;
        match raw.split_first() {
            Some((flag, lower)) => Ok(Self { lower: lower.to_vec(), inclusive: *flag == 1 }),
            None => Ok(Self { lower: Vec::new(), inclusive: true }),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Objects, in key order.
    pub objects: Vec<pb::ObjectInfo>,
    /// Common prefixes, in order.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Resume>,
}

/// Keys fetched per seek.
const SEEK_BATCH: usize = 256;

/// Builds one page of at most `limit` objects plus common prefixes.
///
/// `seek(lower, inclusive, upper, n)` returns up to `n` objects in byte order of their keys,
/// starting at `lower` (inclusive or not) and below `upper` (when given).
pub fn list_page(
    prefix: &str,
    delimiter: &str,
    resume: Option<Resume>,
    limit: usize,
    mut seek: impl FnMut(&[u8], bool, Option<&[u8]>, usize) -> ExoResult<Vec<pb::ObjectInfo>>,
) -> ExoResult<Page> {
    let upper = prefix_successor(prefix.as_bytes());
    let mut position = match resume {
        Some(resume) if resume.lower.as_slice() >= prefix.as_bytes() => resume,
        _ => Resume { lower: prefix.as_bytes().to_vec(), inclusive: true },
    };
    let mut page = Page::default();
    loop {
        let batch = seek(&position.lower, position.inclusive, upper.as_deref(), SEEK_BATCH)?;
        if batch.is_empty() {
            return Ok(page);
        }
        for info in batch {
            let Some(rest) = info.key.strip_prefix(prefix) else { return Ok(page) };
            let common = (!delimiter.is_empty())
                .then(|| rest.find(delimiter).map(|at| format!("{prefix}{}", &rest[..at + delimiter.len()])))
                .flatten();
            if page.objects.len() + page.common_prefixes.len() == limit {
                // One more item exists: the next page resumes where this one stopped.
                page.next = Some(position);
                return Ok(page);
            }
            match common {
                Some(common) => {
                    position = match prefix_successor(common.as_bytes()) {
                        Some(lower) => Resume { lower, inclusive: true },
                        None => return Ok(page),
                    };
                    page.common_prefixes.push(common);
                    // The rest of this batch lies under the common prefix: seek past it.
                    break;
                }
                None => {
                    position = Resume { lower: info.key.as_bytes().to_vec(), inclusive: false };
                    page.objects.push(info);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn store(keys: &[&str]) -> BTreeMap<Vec<u8>, pb::ObjectInfo> {
        keys.iter()
            .map(|k| (k.as_bytes().to_vec(), pb::ObjectInfo { key: (*k).to_owned(), ..Default::default() }))
            .collect()
    }

    type Seek<'a> = Box<dyn FnMut(&[u8], bool, Option<&[u8]>, usize) -> ExoResult<Vec<pb::ObjectInfo>> + 'a>;

    fn seeker(map: &BTreeMap<Vec<u8>, pb::ObjectInfo>) -> Seek<'_> {
        Box::new(move |lower, inclusive, upper, n| {
            Ok(map
                .range(lower.to_vec()..)
                .filter(|(k, _)| inclusive || k.as_slice() != lower)
                .take_while(|(k, _)| upper.is_none_or(|u| k.as_slice() < u))
                .take(n)
                .map(|(_, v)| v.clone())
                .collect())
        })
    }

    fn all_pages(
        map: &BTreeMap<Vec<u8>, pb::ObjectInfo>,
        prefix: &str,
        delimiter: &str,
        limit: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut resume = None;
        loop {
            let page = list_page(prefix, delimiter, resume, limit, seeker(map)).unwrap();
            assert!(page.objects.len() + page.common_prefixes.len() <= limit);
            out.extend(page.objects.into_iter().map(|o| o.key));
            out.extend(page.common_prefixes.into_iter().map(|p| format!("P:{p}")));
            match page.next {
                Some(next) => resume = Some(Resume::from_token(&next.token()).unwrap()),
                None => return out,
            }
        }
    }

    #[test]
    fn delimiter_groups_and_pages() {
        let map = store(&["a/1", "a/2", "a/b/3", "b", "c/1", "d"]);
        let mut got = all_pages(&map, "", "/", 1);
        got.sort();
        assert_eq!(got, ["P:a/", "P:c/", "b", "d"]);
        let got = all_pages(&map, "a/", "/", 10);
        assert_eq!(got, ["a/1", "a/2", "P:a/b/"]);
        let got = all_pages(&map, "", "", 2);
        assert_eq!(got, ["a/1", "a/2", "a/b/3", "b", "c/1", "d"]);
    }
}
