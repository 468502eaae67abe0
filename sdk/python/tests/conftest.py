"""What the tests share: the proxies they run against, and unique names.

Every test talks to real proxies over real sockets. ``sdk/python/ci.sh`` provides them:
``EXO_EQS_ENDPOINT``, ``EXO_EOS_ENDPOINT``, ``EXO_EKV_ENDPOINT`` (``exo up``), the TLS + mTLS +
token eqs proxy it starts (``EXO_TEST_TLS_*``), and the eqs binary the push tests start a proxy
of their own with (``EXO_EQS_PROXY_BIN``). A test whose proxy is not given fails, naming the
variable: nothing is skipped quietly.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]


def need(name: str) -> str:
    """The value of ``name``; fails the test when it is not set."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"${name} is not set: run the tests with sdk/python/ci.sh (it provides the proxies)")
    return value


@pytest.fixture(scope="session")
def eqs() -> str:
    return need("EXO_EQS_ENDPOINT")


@pytest.fixture(scope="session")
def eos() -> str:
    return need("EXO_EOS_ENDPOINT")


@pytest.fixture(scope="session")
def ekv() -> str:
    return need("EXO_EKV_ENDPOINT")


@pytest.fixture
def name() -> str:
    """A name no other test (or run) uses: portable (a-z, 0-9, '-')."""
    return "py-" + secrets.token_hex(6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None, seconds: float = 30) -> None:
    """Waits for ``url`` (a proxy's /readyz) to answer 200."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {seconds}s")


@dataclass
class OwnProxy:
    """An eqs proxy a test started, and where it listens."""

    endpoint: str
    socket_path: str
    log: Path


@dataclass
class TlsProxy:
    """The TLS + mTLS + token eqs proxy ci.sh started."""

    endpoint: str
    ca_file: str
    client_cert: str
    client_key: str
    token: str


@pytest.fixture(scope="session")
def tls_proxy() -> TlsProxy:
    return TlsProxy(
        endpoint=need("EXO_TEST_TLS_ENDPOINT"),
        ca_file=need("EXO_TEST_TLS_CA_FILE"),
        client_cert=need("EXO_TEST_TLS_CLIENT_CERT"),
        client_key=need("EXO_TEST_TLS_CLIENT_KEY"),
        token=need("EXO_TEST_TLS_TOKEN"),
    )


def start_eqs(config: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Starts ``$EXO_EQS_PROXY_BIN --config`` with ``config`` (YAML); returns it and its log."""
    binary = need("EXO_EQS_PROXY_BIN")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"$EXO_EQS_PROXY_BIN={binary} is not an executable: build the workspace first")
    path = workdir / "eqs.yaml"
    path.write_text(config)
    log = workdir / "eqs.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "--config", str(path)], stdout=out, stderr=subprocess.STDOUT)
    return process, log


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short, so a Unix socket's path stays under its 107-byte limit.
    with tempfile.TemporaryDirectory(prefix="exopy-") as d:
        yield Path(d)
