"""The client's behaviour on the wire, against a scripted HTTP server on loopback: retries (which
calls, how often, how long apart), deadlines, the bearer token, trace context, error decoding,
and the settings a client refuses."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import exoflow
from conftest import free_port
from exoflow import ByteRange, ExoError, Reason, RetryPolicy, Tls
from scripted import Answer, Scripted, problem

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
ENTRY = Answer(200, b'{"entry":{"key":"k","value":"aGk=","version":"7"}}')


def test_retries_retryable_errors_until_attempts_run_out() -> None:
    with Scripted([problem(503, "BACKEND_UNAVAILABLE", retryable=True)]).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        with pytest.raises(exoflow.UnavailableError) as caught:
            kv.get("table", "k")
    assert caught.value.reason is Reason.BACKEND_UNAVAILABLE
    assert caught.value.retryable
    assert len(server.requests) == 3


def test_never_retries_a_rejected_request() -> None:
    with Scripted([problem(400, "INVALID_NAME", retryable=False)]).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        with pytest.raises(exoflow.InvalidArgumentError) as caught:
            kv.get("table", "k")
    assert caught.value.reason is Reason.INVALID_NAME
    assert len(server.requests) == 1


def test_stops_at_first_success() -> None:
    with Scripted([problem(504, "TIMEOUT", retryable=True), ENTRY]).running() as server:
        entry = exoflow.KvClient(server.endpoint, retry=FAST, token="").get("table", "k")
    assert entry.value == b"hi"
    assert entry.version == "7"
    assert len(server.requests) == 2


def test_waits_at_least_as_long_as_the_proxy_asked() -> None:
    answers = [problem(503, "BACKEND_UNAVAILABLE", retryable=True, retry_after_ms=300), ENTRY]
    with Scripted(answers).running() as server:
        exoflow.KvClient(server.endpoint, retry=FAST, token="").get("table", "k")
    # The policy's own back-off is at most 2 ms: the wait is the hint's.
    assert server.requests[1].at - server.requests[0].at >= 0.3


def test_sends_are_retried_at_least_once_delivery_as_in_the_rust_sdk() -> None:
    answers = [problem(503, "BACKEND_UNAVAILABLE", retryable=True), Answer(200, b'{"messageId":"m1"}')]
    with Scripted(answers).running() as server:
        message_id = exoflow.QueueClient(server.endpoint, retry=FAST, token="").send("orders", b"x")
    assert message_id == "m1"
    assert len(server.requests) == 2
    assert server.requests[0].body == server.requests[1].body


def test_uploads_and_downloads_are_never_retried() -> None:
    with Scripted([problem(503, "BACKEND_UNAVAILABLE", retryable=True)]).running() as server:
        objects = exoflow.ObjectClient(server.endpoint, retry=FAST, token="")
        with pytest.raises(exoflow.UnavailableError):
            objects.put("bucket", "key", b"data")
        assert len(server.requests) == 1
        with pytest.raises(exoflow.UnavailableError):
            objects.get("bucket", "key")
        assert len(server.requests) == 2
        with pytest.raises(exoflow.UnavailableError):
            objects.head("bucket", "key")
        # HEAD is a unary call: retried (its 503 has no body; the status says retryable).
        assert len(server.requests) == 5


INCREMENTED = Answer(200, b'{"value":"5","version":"v5"}')


@pytest.mark.parametrize(
    ("status", "reason"),
    [(503, "BACKEND_UNAVAILABLE"), (504, "TIMEOUT"), (503, "SHUTTING_DOWN")],
)
def test_an_increment_is_not_retried_on_a_retryable_error_it_may_have_applied_on(status: int, reason: str) -> None:
    answers = [problem(status, reason, retryable=True), INCREMENTED]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        with pytest.raises(ExoError) as caught:
            kv.increment("t", "hits")
    # Raised as the proxy gave it: still marked retryable, but sent once.
    assert caught.value.reason is Reason(reason)
    assert caught.value.retryable
    assert len(server.requests) == 1


def test_an_increment_is_retried_when_throttled_the_proxy_wrote_nothing() -> None:
    answers = [problem(429, "THROTTLED", retryable=True), problem(429, "THROTTLED", retryable=True), INCREMENTED]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        assert kv.increment("t", "hits", 2, ttl_seconds=60) == 5
    assert len(server.requests) == 3
    assert server.requests[0].path == "/api/v1/tables/t/increment"
    assert server.requests[0].body == server.requests[2].body
    assert json.loads(server.requests[0].body) == {"key": "hits", "delta": 2, "ttlSeconds": 60}
    # Attempts still run out.
    with Scripted([problem(429, "THROTTLED", retryable=True)]).running() as server:
        with pytest.raises(exoflow.ResourceExhaustedError) as caught:
            exoflow.KvClient(server.endpoint, retry=FAST, token="").increment("t", "hits")
        assert caught.value.reason is Reason.THROTTLED
    assert len(server.requests) == 3


def test_the_asyncio_increment_follows_the_same_retry_rule() -> None:
    async def main(endpoint: str) -> tuple[int, ExoError]:
        async with exoflow.AsyncKvClient(endpoint, retry=FAST, token="") as kv:
            value = await kv.increment("t", "hits")
            with pytest.raises(ExoError) as caught:
                await kv.increment("t", "hits")
            return value, caught.value

    answers = [
        problem(429, "THROTTLED", retryable=True),
        INCREMENTED,
        problem(503, "BACKEND_UNAVAILABLE", retryable=True),
    ]
    with Scripted(answers).running() as server:
        value, err = asyncio.run(main(server.endpoint))
    assert value == 5
    assert err.reason is Reason.BACKEND_UNAVAILABLE
    assert len(server.requests) == 3


def test_increment_values_are_exact_64_bit_integers() -> None:
    answers = [
        Answer(200, b'{"value":"9223372036854775807","version":"v1"}'),
        Answer(200, b'{"version":"v2"}'),
        Answer(200, b'{"value":"-9223372036854775808","version":"v3"}'),
        Answer(200, b'{"value":"twelve","version":"v4"}'),
    ]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        assert kv.increment_versioned("t", "k", 2**63 - 1) == exoflow.Incremented(2**63 - 1, "v1")
        assert kv.increment("t", "k", 0) == 0  # proto3 JSON leaves a 0 out
        assert kv.increment("t", "k", -(2**63)) == -(2**63)
        with pytest.raises(exoflow.InternalError):
            kv.increment("t", "k")
    # Sent as JSON numbers, digit for digit.
    assert b'"delta":9223372036854775807' in server.requests[0].body
    assert b'"delta":-9223372036854775808' in server.requests[2].body


@pytest.mark.parametrize(
    ("delta", "ttl_seconds", "field"),
    [
        (2**63, None, "delta"),
        (-(2**63) - 1, None, "delta"),
        (True, None, "delta"),
        (1.5, None, "delta"),
        ("1", None, "delta"),
        (1, -1, "ttl_seconds"),
        (1, 0.5, "ttl_seconds"),
    ],
)
def test_an_increment_the_proxy_could_not_take_is_refused_before_it_is_sent(
    delta: object, ttl_seconds: float | None, field: str
) -> None:
    with Scripted([INCREMENTED]).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        with pytest.raises(exoflow.InvalidArgumentError) as caught:
            kv.increment("t", "k", delta, ttl_seconds=ttl_seconds)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert not server.requests


def test_counter_errors_are_told_apart_by_reason_not_status() -> None:
    answers = [
        problem(409, "NOT_A_COUNTER", retryable=False),
        problem(409, "COUNTER_OVERFLOW", retryable=False),
        problem(409, "QUEUE_ALREADY_EXISTS", retryable=False),
    ]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        with pytest.raises(exoflow.NotACounterError) as not_a_counter:
            kv.increment("t", "k")
        with pytest.raises(exoflow.CounterOverflowError) as overflow:
            kv.increment("t", "k")
        with pytest.raises(exoflow.AlreadyExistsError):
            kv.increment("t", "k")
    assert (not_a_counter.value.reason, not_a_counter.value.status) == (Reason.NOT_A_COUNTER, 409)
    assert (overflow.value.reason, overflow.value.status) == (Reason.COUNTER_OVERFLOW, 409)
    assert len(server.requests) == 3
    copy = pickle.loads(pickle.dumps(overflow.value))
    assert type(copy) is exoflow.CounterOverflowError


def test_a_write_batch_is_retried_as_a_put_is_and_sent_as_the_contract_says() -> None:
    answers = [problem(503, "BACKEND_UNAVAILABLE", retryable=True), Answer(200, b'{"versions":["v1",""]}')]
    writes = [
        exoflow.Write.put("a", b"\x00x", if_version="v0", ttl_seconds=1.5),
        exoflow.Write.delete("b", if_version="v9"),
    ]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, retry=FAST, token="")
        assert kv.write_batch("t", writes) == ["v1", ""]
    assert len(server.requests) == 2
    assert server.requests[0].path == "/api/v1/tables/t/write-batch"
    assert server.requests[0].body == server.requests[1].body
    assert json.loads(server.requests[0].body) == {
        "writes": [
            {"key": "a", "value": "AHg=", "condition": {"versionEquals": "v0"}, "ttlSeconds": 2},
            {"key": "b", "delete": True, "condition": {"versionEquals": "v9"}},
        ]
    }


def test_write_batch_answers_are_read_as_proto3_json_writes_them() -> None:
    answers = [
        Answer(200, b"{}"),  # every write a delete: the list of empty versions may be left out
        Answer(200, b'{"versions":["v1",null]}'),
        Answer(200, b'{"versions":["v1"]}'),
    ]
    with Scripted(answers).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        assert kv.write_batch("t", [exoflow.Write.delete("a"), exoflow.Write.delete("b")]) == ["", ""]
        assert kv.write_batch("t", [exoflow.Write.put("a", b""), exoflow.Write.delete("b")]) == ["v1", ""]
        with pytest.raises(exoflow.InternalError):  # one version for two writes
            kv.write_batch("t", [exoflow.Write.put("a", b""), exoflow.Write.put("b", b"")])


def test_the_deadline_is_sent_and_spans_every_attempt() -> None:
    with Scripted([ENTRY]).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        kv.get("table", "k", timeout=2.5)
        kv.get("table", "k")
        exoflow.KvClient(server.endpoint, token="", timeout=7).get("table", "k")
    sent = int(server.requests[0].headers[exoflow.TIMEOUT_HEADER])
    assert 2000 < sent <= 2500
    assert exoflow.TIMEOUT_HEADER not in server.requests[1].headers
    assert 6000 < int(server.requests[2].headers[exoflow.TIMEOUT_HEADER]) <= 7000


def test_no_retry_whose_back_off_would_outlast_the_deadline() -> None:
    answers = [problem(503, "BACKEND_UNAVAILABLE", retryable=True, retry_after_ms=1000), ENTRY]
    with Scripted(answers).running() as server:
        started = time.monotonic()
        with pytest.raises(exoflow.UnavailableError):
            exoflow.KvClient(server.endpoint, token="").get("table", "k", timeout=0.4)
        assert time.monotonic() - started < 0.4
    assert len(server.requests) == 1


def test_the_clients_own_timer_ends_a_call_the_server_does_not_answer() -> None:
    with Scripted([Answer(200, b"{}", delay=3)]).running() as server:
        started = time.monotonic()
        with pytest.raises(exoflow.DeadlineExceededError) as caught:
            exoflow.KvClient(server.endpoint, token="").get("table", "k", timeout=0.3)
        elapsed = time.monotonic() - started
    assert caught.value.reason is Reason.TIMEOUT
    assert 0.3 <= elapsed < 1.5


def test_the_bearer_token_from_an_argument_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with Scripted([ENTRY]).running() as server:
        exoflow.KvClient(server.endpoint, token="s3cret").get("t", "k")
        monkeypatch.setenv("EXO_PROXY_TOKEN", "from-env")
        exoflow.KvClient(server.endpoint).get("t", "k")
        monkeypatch.setenv("EXO_EKV_ENDPOINT", server.endpoint)
        exoflow.KvClient.from_env().get("t", "k")
        exoflow.KvClient(server.endpoint, token="").get("t", "k")
    assert server.requests[0].headers["authorization"] == "Bearer s3cret"
    assert server.requests[1].headers["authorization"] == "Bearer from-env"
    assert server.requests[2].headers["authorization"] == "Bearer from-env"
    assert "authorization" not in server.requests[3].headers


def test_keys_are_percent_encoded_and_keep_their_slashes() -> None:
    with Scripted([ENTRY]).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        kv.get("t", "a b/c?d#é")
        kv.get("t", "../x/./y/..z")
    assert server.requests[0].path == "/api/v1/tables/t/entries/a%20b/c%3Fd%23%C3%A9"
    # Dot segments encoded, or the HTTP stack would remove them from the path.
    assert server.requests[1].path == "/api/v1/tables/t/entries/%2E%2E/x/%2E/y/..z"


def test_trace_context_is_propagated_from_the_current_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("exoflow-tests")
    with Scripted([ENTRY]).running() as server:
        kv = exoflow.KvClient(server.endpoint, token="")
        with tracer.start_as_current_span("handle-order") as span:
            kv.get("t", "k")
            context = span.get_span_context()

        async def in_async() -> None:
            async with exoflow.AsyncKvClient(server.endpoint, token="") as client:
                with tracer.start_as_current_span("async-order"):
                    await client.get("t", "k")

        asyncio.run(in_async())
        kv.get("t", "k")
    traceparent = server.requests[0].headers["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    assert trace_id == trace.format_trace_id(context.trace_id)
    assert span_id == trace.format_span_id(context.span_id)
    assert int(flags, 16) == int(context.trace_flags)
    assert "traceparent" in server.requests[1].headers
    assert server.requests[1].headers["traceparent"].split("-")[1] != trace_id
    assert "traceparent" not in server.requests[2].headers, "no span, no context"


def test_problem_documents_become_typed_errors() -> None:
    answer = problem(404, "QUEUE_NOT_FOUND", retryable=False)
    with Scripted([answer]).running() as server, pytest.raises(exoflow.NotFoundError) as caught:
        exoflow.QueueClient(server.endpoint, token="").queue_info("thing")
    err = caught.value
    assert err.reason is Reason.QUEUE_NOT_FOUND
    assert err.is_not_found
    assert (err.backend, err.resource, err.status, err.retryable) == ("scripted", "thing", 404, False)
    assert str(err) == "QUEUE_NOT_FOUND: scripted QUEUE_NOT_FOUND (backend scripted)"
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is exoflow.NotFoundError
    assert (copy.reason, copy.resource, copy.status) == (err.reason, err.resource, err.status)


def test_an_answer_that_is_no_problem_document_still_gives_an_error() -> None:
    answers = [Answer(502, b"upstream gone", {"content-type": "text/plain"})]
    with Scripted(answers).running() as server, pytest.raises(exoflow.UnavailableError) as caught:
        exoflow.KvClient(server.endpoint, token="", retry=RetryPolicy.none()).get("t", "k")
    assert caught.value.retryable
    assert "upstream gone" in caught.value.message


def test_an_unknown_reason_from_a_newer_proxy_is_internal() -> None:
    answers = [problem(500, "SOMETHING_NEW", retryable=False)]
    with Scripted(answers).running() as server, pytest.raises(exoflow.InternalError) as caught:
        exoflow.KvClient(server.endpoint, token="").get("t", "k")
    assert caught.value.reason is Reason.INTERNAL


def test_a_refused_connection_is_retryable_and_names_the_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(exoflow.UnavailableError) as caught:
        exoflow.KvClient(endpoint, token="", retry=FAST).get("t", "k")
    assert caught.value.retryable
    assert endpoint in caught.value.message


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:7401", "ftp://x", "unix:relative/path.sock", "unix:", "http://"],
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(exoflow.InvalidArgumentError):
        exoflow.QueueClient(endpoint)


def test_unix_endpoints_in_both_spellings() -> None:
    assert exoflow.QueueClient("unix:/run/exo/eqs.sock").endpoint == "unix:/run/exo/eqs.sock"
    assert exoflow.QueueClient("unix:///run/exo/eqs.sock").endpoint == "unix:///run/exo/eqs.sock"


def test_a_token_must_be_printable_ascii() -> None:
    with pytest.raises(exoflow.InvalidArgumentError):
        exoflow.QueueClient("http://127.0.0.1:1", token="tök\n")


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(exoflow.InvalidArgumentError, match="both its file and its key"):
        exoflow.QueueClient("https://127.0.0.1:1", tls=Tls(client_cert_file=str(tmp_path / "c.pem")))
    missing = str(tmp_path / "missing-ca.pem")
    with pytest.raises(exoflow.InvalidArgumentError, match=r"missing-ca\.pem"):
        exoflow.QueueClient("https://127.0.0.1:1", tls=Tls(ca_file=missing))
    # Plain HTTP reads no TLS file.
    exoflow.QueueClient("http://127.0.0.1:1", tls=Tls(ca_file=missing))


def test_tls_files_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXO_CA_FILE", "/ca.pem")
    monkeypatch.setenv("EXO_CLIENT_CERT_FILE", "/c.pem")
    monkeypatch.setenv("EXO_CLIENT_KEY_FILE", "/k.pem")
    assert Tls.from_env() == Tls("/ca.pem", "/c.pem", "/k.pem")


def test_byte_ranges_as_http_ranges() -> None:
    assert ByteRange.from_offset(5).header() == "bytes=5-"
    assert ByteRange.span(2, 10).header() == "bytes=2-9"
    assert ByteRange.suffix(4).header() == "bytes=-4"
    with pytest.raises(exoflow.InvalidArgumentError):
        ByteRange.span(5, 5).header()


def test_a_published_message_takes_no_delay() -> None:
    with pytest.raises(exoflow.InvalidArgumentError, match="no delay"):
        exoflow.TopicClient("http://127.0.0.1:1").publish_batch("t", [exoflow.Outgoing(b"x", delay_seconds=3)])


def test_retry_policy_runs_until_success_or_a_final_error() -> None:
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise exoflow.UnavailableError(Reason.BACKEND_UNAVAILABLE, "down", retryable=True)
        return len(calls)

    assert FAST.run(flaky) == 2
    calls.clear()

    def rejected() -> int:
        calls.append(1)
        raise exoflow.InvalidArgumentError(Reason.INVALID_NAME, "bad")

    with pytest.raises(exoflow.InvalidArgumentError):
        FAST.run(rejected)
    assert len(calls) == 1
    calls.clear()

    async def always_down() -> int:
        calls.append(1)
        raise exoflow.UnavailableError(Reason.BACKEND_UNAVAILABLE, "down", retryable=True)

    with pytest.raises(ExoError):
        asyncio.run(FAST.run_async(always_down))
    assert len(calls) == 3
    with pytest.raises(ExoError):
        asyncio.run(RetryPolicy.none().run_async(always_down))
    assert len(calls) == 4


def test_decode_pushed_reads_the_proxys_json() -> None:
    body = (
        b'{"topic":"order-events","subscription":"mail","queue":"mail-orders","message":'
        b'{"messageId":"m-1","body":"/wA=","attributes":{"exo.publish-id":"p-9","region":"eu"},'
        b'"dequeueCount":2,"enqueuedAtMs":"1765000000000"}}'
    )
    pushed = exoflow.decode_pushed(body)
    assert (pushed.topic, pushed.subscription, pushed.queue) == ("order-events", "mail", "mail-orders")
    assert pushed.message.body == b"\xff\x00"
    assert pushed.message.dequeue_count == 2
    assert pushed.message.enqueued_at_ms == 1765000000000
    assert pushed.publish_id == "p-9"
    for bad in (b"", b"[]", b"{}", b'{"message": 3}', b'{"message":{"body":"not base64!"}}'):
        with pytest.raises(exoflow.InvalidArgumentError) as caught:
            exoflow.decode_pushed(bad)
        assert caught.value.reason is Reason.MALFORMED_REQUEST
