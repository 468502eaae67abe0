"""W3C trace context on every call, when OpenTelemetry is installed.

Each request carries the caller's current context as the app's global propagator writes it
(OpenTelemetry's default writes W3C ``traceparent``, and ``tracestate``/``baggage`` when set),
so the proxy's spans continue the app's trace. Without ``opentelemetry-api`` nothing is sent and
nothing is imported; without an active span the propagator writes nothing.
"""

from __future__ import annotations

from collections.abc import MutableMapping

try:
    from opentelemetry import propagate as _propagate
except ImportError:  # OpenTelemetry is optional.
    _propagate = None  # type: ignore[assignment]


def enabled() -> bool:
    """Whether OpenTelemetry is importable (and so contexts are propagated)."""
    return _propagate is not None


def inject(headers: MutableMapping[str, str]) -> None:
    """Writes the current trace context into ``headers``."""
    if _propagate is not None:
        _propagate.inject(headers)
