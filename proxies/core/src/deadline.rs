//! The caller's deadline: how long the caller will wait for this request.
//!
//! A gRPC client says it in `grpc-timeout` (e.g. `250m`); an HTTP client may send the same header
//! or `x-exo-timeout-ms` (milliseconds). The [`caller_deadline`] middleware turns it into an
//! instant for the request's task; the layers then start no backend call once it has passed,
//! bound each call by what is left (never more than the proxy's own per-call timeout), stop
//! retrying when the next back-off would outlast it, and a long poll waits no longer than it.
//! Without the header nothing changes: the proxy's own `request-timeout` bounds every call.
//!
//! Work the handler hands to another task (push delivery, drainers) is not bound by it.

use std::time::{Duration, Instant};

use axum::{extract::Request, middleware::Next, response::Response};

tokio::task_local! {
    static CALLER_DEADLINE: Instant;
}

/// The gRPC header.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The HTTP header, in milliseconds.
pub const HTTP_TIMEOUT_MS: &str = "x-exo-timeout-ms";

/// Reads a `grpc-timeout` value: 1–8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's timeout from a request's headers, if it sent a valid one (an unreadable value
/// is ignored, as gRPC servers do).
pub fn requested_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text(GRPC_TIMEOUT).and_then(parse_grpc_timeout).or_else(|| {
        text(HTTP_TIMEOUT_MS).and_then(|ms| ms.trim().parse::<u64>().ok()).map(Duration::from_millis)
    })
}

/// Middleware: runs the request with the caller's deadline, when it gave one.
pub async fn caller_deadline(request: Request, next: Next) -> Response {
    match requested_timeout(request.headers()) {
        Some(timeout) => {
            let now = Instant::now();
            let deadline = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(86_400 * 365));
            CALLER_DEADLINE.scope(deadline, next.run(request)).await
        }
        None => next.run(request).await,
    }
}

/// Runs `work` under a caller's deadline `timeout` from now (what the middleware does; for
/// tests and in-process callers).
pub async fn with_timeout<F: std::future::Future>(timeout: Duration, work: F) -> F::Output {
    CALLER_DEADLINE.scope(Instant::now() + timeout, work).await
}

/// The caller's deadline for the current request, if it gave one.
pub fn caller() -> Option<Instant> {
    CALLER_DEADLINE.try_with(|d| *d).ok()
}

/// Whether the caller gave a deadline and it has passed.
pub fn passed() -> bool {
    caller().is_some_and(|deadline| Instant::now() >= deadline)
}

/// What is left of the caller's time, if it gave a deadline (zero once passed).
pub fn remaining() -> Option<Duration> {
    caller().map(|d| d.saturating_duration_since(Instant::now()))
}

/// `wait` shortened so that a long poll answers (empty) before the caller's deadline rather than
/// fail with it; `margin` is kept for the answer to travel back.
pub fn clamp_wait(wait: Duration, margin: Duration) -> Duration {
    match remaining() {
        Some(left) => wait.min(left.saturating_sub(margin)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_grpc_timeout("0m"), Some(Duration::ZERO));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", "S1"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefers_grpc_timeout_and_ignores_garbage() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(requested_timeout(&headers), None);
        headers.insert(HTTP_TIMEOUT_MS, "1500".parse().expect("value"));
        assert_eq!(requested_timeout(&headers), Some(Duration::from_millis(1500)));
        headers.insert(GRPC_TIMEOUT, "3S".parse().expect("value"));
        assert_eq!(requested_timeout(&headers), Some(Duration::from_secs(3)));
        headers.insert(GRPC_TIMEOUT, "soon".parse().expect("value"));
        assert_eq!(requested_timeout(&headers), Some(Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn a_long_poll_is_clamped_to_the_callers_time() {
        let wait = Duration::from_secs(20);
        assert_eq!(clamp_wait(wait, Duration::from_millis(100)), wait);
        let clamped =
            with_timeout(Duration::from_secs(2), async { clamp_wait(wait, Duration::from_millis(100)) })
                .await;
        assert!(
            clamped <= Duration::from_millis(1900) && clamped > Duration::from_millis(1800),
            "{clamped:?}"
        );
        assert_eq!(remaining(), None, "the deadline belongs to the scope only");
    }
}
