"""The clients against an eqs proxy with TLS, client certificates (mTLS) and a bearer token,
started by ci.sh with certificates it made (a private CA; the server's certificate names
``localhost`` and ``exo-proxy.test``, not an address)."""

from __future__ import annotations

import asyncio

import pytest

import exoflow
from conftest import TlsProxy
from exoflow import Reason, Tls

pytestmark = pytest.mark.tls


def tls(proxy: TlsProxy, **changes: str | None) -> Tls:
    settings: dict[str, str | None] = {
        "ca_file": proxy.ca_file,
        "client_cert_file": proxy.client_cert,
        "client_key_file": proxy.client_key,
    }
    settings.update(changes)
    return Tls(**settings)


def test_calls_pass_with_the_ca_a_client_certificate_and_the_token(tls_proxy: TlsProxy) -> None:
    with exoflow.QueueClient(tls_proxy.endpoint, tls=tls(tls_proxy), token=tls_proxy.token) as queues:
        assert queues.describe().backend == "memory"
        queues.create_queue("over-tls")
        queues.send("over-tls", b"secret \x00 bytes")
        [message] = queues.receive("over-tls", wait_seconds=2)
        assert message.body == b"secret \x00 bytes"
        queues.ack("over-tls", message)
        queues.delete_queue("over-tls")


def test_http2_over_tls(tls_proxy: TlsProxy) -> None:
    async def main() -> None:
        async with exoflow.AsyncQueueClient(
            tls_proxy.endpoint, tls=tls(tls_proxy), token=tls_proxy.token, http2=True
        ) as queues:
            await queues.create_queue("over-h2")
            ids = await asyncio.gather(*(queues.send("over-h2", f"m{i}") for i in range(50)))
            assert len(set(ids)) == 50
            # White box: agreed by ALPN.
            response = await queues._transport.call(exoflow.queue._queue_info("over-h2")[0], None)
            assert response.http_version == "HTTP/2"
            await queues.delete_queue("over-h2")

    asyncio.run(main())


def test_everything_from_the_environment(tls_proxy: TlsProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXO_EQS_ENDPOINT", tls_proxy.endpoint)
    monkeypatch.setenv("EXO_CA_FILE", tls_proxy.ca_file)
    monkeypatch.setenv("EXO_CLIENT_CERT_FILE", tls_proxy.client_cert)
    monkeypatch.setenv("EXO_CLIENT_KEY_FILE", tls_proxy.client_key)
    monkeypatch.setenv("EXO_PROXY_TOKEN", tls_proxy.token)
    with exoflow.TopicClient.from_env() as topics:
        assert topics.create_topic("tls-env")
        topics.delete_topic("tls-env")


def test_a_missing_or_wrong_token_is_unauthenticated(tls_proxy: TlsProxy) -> None:
    for token in ("", "not-the-token"):
        queues = exoflow.QueueClient(tls_proxy.endpoint, tls=tls(tls_proxy), token=token)
        with pytest.raises(exoflow.UnauthenticatedError) as caught:
            queues.list_queues()
        assert caught.value.reason is Reason.UNAUTHENTICATED
        assert not caught.value.retryable
        assert caught.value.status == 401


def test_no_client_certificate_is_refused_and_not_retried(tls_proxy: TlsProxy) -> None:
    queues = exoflow.QueueClient(
        tls_proxy.endpoint,
        tls=tls(tls_proxy, client_cert_file=None, client_key_file=None),
        token=tls_proxy.token,
        retry=exoflow.RetryPolicy(max_attempts=4, initial_backoff=2.0, max_backoff=2.0),
    )
    with pytest.raises(exoflow.UnavailableError) as caught:
        queues.list_queues(timeout=10)
    assert not caught.value.retryable, caught.value.message
    assert "TLS" in caught.value.message


def test_an_untrusted_server_is_named_in_the_error(tls_proxy: TlsProxy) -> None:
    queues = exoflow.QueueClient(tls_proxy.endpoint, tls=tls(tls_proxy, ca_file=None), token=tls_proxy.token)
    with pytest.raises(exoflow.UnavailableError) as caught:
        queues.list_queues()
    assert not caught.value.retryable
    assert "certificate verify failed" in caught.value.message


def test_the_name_to_check_when_the_endpoint_is_an_address(tls_proxy: TlsProxy) -> None:
    by_address = tls_proxy.endpoint.replace("localhost", "127.0.0.1")
    assert by_address != tls_proxy.endpoint
    with pytest.raises(exoflow.UnavailableError) as caught:
        exoflow.QueueClient(by_address, tls=tls(tls_proxy), token=tls_proxy.token).list_queues()
    assert "127.0.0.1" in caught.value.message
    named = exoflow.QueueClient(by_address, tls=tls(tls_proxy, server_name="exo-proxy.test"), token=tls_proxy.token)
    assert isinstance(named.list_queues(), list)
