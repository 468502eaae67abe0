"""The SDK against the contract's OpenAPI documents: every operation has a method in both the
sync and the asyncio client, and every route the SDK calls is the document's."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

import exoflow
from conftest import ROOT
from exoflow._contract import OPERATION_ATTRIBUTE, ROUTES

DOCUMENTS = {
    "eqs": ROOT / "exo-proto" / "openapi-eqs.json",
    "eos": ROOT / "exo-proto" / "openapi-eos.json",
    "ekv": ROOT / "exo-proto" / "openapi-ekv.json",
}

CLIENTS: dict[str, list[tuple[type, type]]] = {
    "eqs": [
        (exoflow.QueueClient, exoflow.AsyncQueueClient),
        (exoflow.TopicClient, exoflow.AsyncTopicClient),
    ],
    "eos": [(exoflow.ObjectClient, exoflow.AsyncObjectClient)],
    "ekv": [(exoflow.KvClient, exoflow.AsyncKvClient)],
}

METHODS = {"get", "put", "post", "delete", "head", "patch", "options", "trace"}


def document_operations(service: str) -> dict[str, tuple[str, str]]:
    """operationId -> (HTTP method, path) of a service's OpenAPI document."""
    document = json.loads(Path(DOCUMENTS[service]).read_text())
    operations: dict[str, tuple[str, str]] = {}
    for route, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                operations[op["operationId"]] = (method.upper(), route)
    return operations


def covered(cls: type) -> dict[tuple[str, str], str]:
    """(service, operationId) -> the method of ``cls`` that calls it."""
    found: dict[tuple[str, str], str] = {}
    for attr, member in inspect.getmembers(cls):
        for pair in getattr(member, OPERATION_ATTRIBUTE, ()):
            found[pair] = attr
    return found


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_every_operation_of_the_contract_has_a_method_in_both_clients(service: str) -> None:
    operations = document_operations(service)
    assert operations, f"no operation read from {DOCUMENTS[service]}"
    sync_covered: dict[tuple[str, str], str] = {}
    async_covered: dict[tuple[str, str], str] = {}
    for sync_cls, async_cls in CLIENTS[service]:
        sync_covered.update(covered(sync_cls))
        async_covered.update(covered(async_cls))
    missing_sync = sorted(op for op in operations if (service, op) not in sync_covered)
    missing_async = sorted(op for op in operations if (service, op) not in async_covered)
    assert not missing_sync, f"{service}: operations with no method in the sync clients: {missing_sync}"
    assert not missing_async, f"{service}: operations with no method in the asyncio clients: {missing_async}"
    # Twins: the asyncio client calls each operation from the method of the same name.
    for pair, attr in sync_covered.items():
        assert async_covered.get(pair) == attr, f"{pair}: sync {attr}, async {async_covered.get(pair)}"
        sync_method = getattr(next(c for c, _ in CLIENTS[service] if hasattr(c, attr)), attr)
        async_method = getattr(next(a for _, a in CLIENTS[service] if hasattr(a, attr)), attr)
        sync_params = list(inspect.signature(sync_method).parameters)
        async_params = list(inspect.signature(async_method).parameters)
        assert sync_params == async_params, f"{attr}: {sync_params} != {async_params}"


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_every_route_the_sdk_calls_is_the_documents(service: str) -> None:
    operations = document_operations(service)
    ours = {op: route for (svc, op), route in ROUTES.items() if svc == service}
    assert set(ours) == set(operations), (
        f"{service}: the SDK's routes and the document's operations differ: "
        f"only in the SDK {sorted(set(ours) - set(operations))}, only in the document "
        f"{sorted(set(operations) - set(ours))}"
    )
    for op, route in ours.items():
        assert route == operations[op], f"{service} {op}: the SDK calls {route}, the document says {operations[op]}"


def test_every_public_calling_method_is_marked() -> None:
    """A method that sends a request but carries no operation would escape the checks above:
    every public method of a client either carries its operation or is a documented helper
    built on marked ones."""
    helpers = {
        "close",
        "from_env",
        "endpoint",
        "list_queues",
        "list_topics",
        "list",
        "put_file",
        "get_bytes",
        "get_to",
        "get_to_file",
    }
    for pairs in CLIENTS.values():
        for pair in pairs:
            for cls in pair:
                for attr, member in inspect.getmembers(cls):
                    if attr.startswith("_") or attr.isupper() or attr in helpers:
                        continue
                    assert getattr(member, OPERATION_ATTRIBUTE, None), f"{cls.__name__}.{attr} carries no operation"


PROTOS = {
    "eqs": [ROOT / "exo-proto/proto/exo/queue/v1/queue.proto"],
    "eos": [ROOT / "exo-proto/proto/exo/object/v1/object.proto"],
    "ekv": [ROOT / "exo-proto/proto/exo/kv/v1/kv.proto"],
}

# The HTTP operation of each gRPC method whose name alone is ambiguous across services (every
# other method's operationId is its name in lowerCamelCase).
RPC_OPERATIONS = {
    "eos": {
        "Put": "putObject",
        "Get": "getObject",
        "Head": "headObject",
        "Delete": "deleteObject",
        "DeleteBatch": "deleteObjects",
        "List": "listObjects",
        "Copy": "copyObject",
        "Presign": "presignObject",
    },
    "ekv": {"Get": "getEntry", "Put": "putEntry", "Delete": "deleteEntry", "List": "listEntries"},
}


@pytest.mark.parametrize("service", sorted(PROTOS))
def test_every_grpc_method_of_the_protos_has_a_method_in_the_sdk(service: str) -> None:
    rpcs = [
        match.group(1)
        for proto in PROTOS[service]
        for match in re.finditer(r"^\s*rpc\s+(\w+)\s*\(", proto.read_text(), re.MULTILINE)
    ]
    assert rpcs, f"no rpc read from {PROTOS[service]}"
    sync_covered: set[tuple[str, str]] = set()
    async_covered: set[tuple[str, str]] = set()
    for sync_cls, async_cls in CLIENTS[service]:
        sync_covered |= set(covered(sync_cls))
        async_covered |= set(covered(async_cls))
    for rpc in rpcs:
        op = RPC_OPERATIONS.get(service, {}).get(rpc, rpc[0].lower() + rpc[1:])
        assert (service, op) in sync_covered, f"{service} rpc {rpc} ({op}) has no method in the sync clients"
        assert (service, op) in async_covered, f"{service} rpc {rpc} ({op}) has no method in the asyncio clients"
