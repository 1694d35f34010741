"""api/edges.py subclasses uvicorn's private `HttpToolsProtocol`: it copies `data_received`,
overrides the connection and parser callbacks, and relies on the attributes and the 503 path of
the methods around them. pyproject.toml pins uvicorn to the versions where these were read
(0.55.x); this test fails when uvicorn changes any of them, so that an upgrade re-reads the
guards instead of silently losing one (the edge tests in test_edges.py then check behaviour)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http import flow_control
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tallygate.api.edges import GuardedHttpTools

READ_AGAINST = {  # sha256 of each method's source (first 16 hex digits), uvicorn 0.55.0
    "HttpToolsProtocol.__init__": "4f08999410347141",
    "HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "HttpToolsProtocol.on_url": "37be44e962b04ca8",
    "HttpToolsProtocol.on_header": "1e86ebb6cea0458c",
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "HttpToolsProtocol._start_asgi_task": "8d0189e65525db42",
    "HttpToolsProtocol._unset_keepalive_if_required": "00a6a4e47214e68e",
    "HttpToolsProtocol._should_upgrade": "8fcad1ab8e096739",
    "HttpToolsProtocol.handle_websocket_upgrade": "d5da377bfc77e588",
    "HttpToolsProtocol._unsupported_upgrade_warning": "55bbd2762b189d9a",
    "RequestResponseCycle.__init__": "4d2f220910c33c12",
    "service_unavailable": "f54bba3c14aa91d5",
}


def _relied_on() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {"service_unavailable": flow_control.service_unavailable,
                                            "RequestResponseCycle.__init__": RequestResponseCycle.__init__}
    for name in READ_AGAINST:
        owner, _, method = name.partition(".")
        if owner == "HttpToolsProtocol":
            found[name] = getattr(HttpToolsProtocol, method)
    return found


def test_uvicorn_methods_the_edge_guards_copy_or_override_are_unchanged() -> None:
    changed = sorted(name for name, fn in _relied_on().items()
                     if hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16] != READ_AGAINST[name])
    assert not changed, (f"uvicorn {uvicorn.__version__} changed {changed}: re-read them against "
                         "src/tallygate/api/edges.py, then update READ_AGAINST and the pin in pyproject.toml")


def test_every_uvicorn_method_the_guards_override_is_pinned() -> None:
    overridden = {f"HttpToolsProtocol.{name}" for name, value in vars(GuardedHttpTools).items()
                  if callable(value) and hasattr(HttpToolsProtocol, name)}
    assert overridden <= set(READ_AGAINST), overridden - set(READ_AGAINST)
