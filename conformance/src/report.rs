//! The table printed for people, and the JSON and JUnit XML reports written for machines.

use std::{fmt::Write as _, path::Path};

use crate::{CaseResult, Outcome};

/// Counts of each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Unsupported (declared absent and verified to answer UNSUPPORTED).
    pub unsupported: usize,
    /// Unverified against this emulator.
    pub unverified: usize,
}

/// Tallies results.
pub fn totals(results: &[CaseResult]) -> Totals {
    let mut t = Totals::default();
    for r in results {
        match r.outcome {
            Outcome::Pass => t.passed += 1,
            Outcome::Fail(_) => t.failed += 1,
            Outcome::Unsupported(_) => t.unsupported += 1,
            Outcome::Unverified(_) => t.unverified += 1,
        }
    }
    t
}

/// A plain-text table: case, result, milliseconds, and why for failures.
pub fn table(backend: &str, results: &[CaseResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(out, "conformance: backend {backend}");
    let _ = writeln!(out, "{:<width$}  {:<11}  {:>7}", "case", "result", "ms");
    for r in results {
        let (label, detail) = match &r.outcome {
            Outcome::Pass => ("pass", None),
            Outcome::Fail(why) => ("FAIL", Some(why)),
            Outcome::Unsupported(why) => ("unsupported", Some(why)),
            Outcome::Unverified(why) => ("unverified", Some(why)),
        };
        let _ = writeln!(out, "{:<width$}  {:<11}  {:>7}", r.name, label, r.millis);
        if let Some(detail) = detail {
            let _ = writeln!(out, "{:<width$}    {detail}", "");
        }
    }
    out
}

/// The closing line: `conformance: N passed, N failed, N skipped` (unsupported counts as
/// skipped), and `, N unverified (the report says why)` when there are such.
pub fn summary_line(t: Totals) -> String {
    let unverified = if t.unverified > 0 {
        format!(", {} unverified (see why in the report)", t.unverified)
    } else {
        String::new()
    };
    format!("conformance: {} passed, {} failed, {} skipped{unverified}", t.passed, t.failed, t.unsupported)
}

/// Writes `<backend>.json` and `<backend>.junit.xml` into `dir`.
pub fn write_reports(dir: &Path, backend: &str, results: &[CaseResult]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let t = totals(results);
    let json = serde_json::json!({
        "backend": backend,
        "passed": t.passed,
        "failed": t.failed,
        "unsupported": t.unsupported,
        "unverified": t.unverified,
        "cases": results,
    });
    std::fs::write(dir.join(format!("{backend}.json")), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(dir.join(format!("{backend}.junit.xml")), junit(backend, results))
}

/// JUnit XML: failures as `<failure>`, unsupported and unverified cases as `<skipped>` with
/// the reason (an unverified one says so first).
pub fn junit(backend: &str, results: &[CaseResult]) -> String {
    let t = totals(results);
    let seconds: f64 = results.iter().map(|r| r.millis as f64 / 1000.0).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"conformance.{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{seconds:.3}\">",
        xml(backend),
        results.len(),
        t.failed,
        t.unsupported + t.unverified
    );
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{:.3}\"",
            xml(backend),
            xml(&r.name),
            r.millis as f64 / 1000.0
        );
        match &r.outcome {
            Outcome::Pass => out.push_str("/>\n"),
            Outcome::Fail(why) => {
                let _ = writeln!(out, ">\n    <failure message=\"{}\"/>\n  </testcase>", xml(why));
            }
            Outcome::Unsupported(why) => {
                let _ = writeln!(out, ">\n    <skipped message=\"{}\"/>\n  </testcase>", xml(why));
            }
            Outcome::Unverified(why) => {
                let why = format!("unverified against this emulator: {why}");
                let _ = writeln!(out, ">\n    <skipped message=\"{}\"/>\n  </testcase>", xml(&why));
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> CaseResult {
        CaseResult { name: name.into(), description: String::new(), outcome, millis: 12 }
    }

    #[test]
    fn junit_escapes_and_classifies() {
        let xml = junit(
            "memory",
            &[
                result("a", Outcome::Pass),
                result("b", Outcome::Fail("expected <1> & got \"2\"\u{1}".into())),
                result("c", Outcome::Unsupported("PURGE not declared".into())),
            ],
        );
        assert!(xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("expected &lt;1&gt; &amp; got &quot;2&quot; "), "{xml}");
        assert!(xml.contains("<skipped message=\"PURGE not declared\"/>"), "{xml}");
    }

    #[test]
    fn summary_counts_unsupported_as_skipped() {
        let t = totals(&[result("a", Outcome::Pass), result("b", Outcome::Unsupported(String::new()))]);
        assert_eq!(summary_line(t), "conformance: 1 passed, 0 failed, 1 skipped");
    }
}
