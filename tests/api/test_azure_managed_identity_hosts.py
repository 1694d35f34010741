"""`type: azure` with the managed identity of an Azure Arc machine and of a Service Fabric
cluster: azure-identity's ManagedIdentityCredential picks each by environment, in a real
`tallygate serve`, and its token endpoint is a fake on loopback (tests/fakes/managed_identity.py).
Arc's challenge (a 401 naming a key file, the request repeated with the file's secret) and
Service Fabric's secret header over HTTPS with the cluster's self-signed certificate are each
passed; the token is fetched once, reused, and refreshed in the background before it expires.

Arc needs its key file in /var/opt/azcmagent/tokens, the one folder azure-identity reads it from:
the test writes there (and removes what it wrote), so it needs a user that may create it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.azure import FakeAzure
from tests.fakes.managed_identity import ARC_KEY_DIR, FakeArc, FakeServiceFabric
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hi"}]
LIFETIME_S = 200  # inside the 300 s refresh margin: the next request after azure-identity's 30 s refreshes
HOSTS = ("arc", "service_fabric")


@pytest.fixture(scope="module")
def key_dir() -> Iterator[Path]:
    created = [p for p in (ARC_KEY_DIR.parent, ARC_KEY_DIR) if not p.exists()]
    try:
        ARC_KEY_DIR.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        message = f"Azure Arc's key file must be in {ARC_KEY_DIR}, which this user cannot create"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield ARC_KEY_DIR
    for path in reversed(created):
        path.rmdir()


@pytest.fixture(scope="module")
def identities(key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeArc]]:
    with FakeArc(key_dir, token_lifetime_s=LIFETIME_S) as arc, \
            FakeServiceFabric(tmp_path_factory.mktemp("sf"), token_lifetime_s=LIFETIME_S) as fabric:
        yield {"arc": arc, "service_fabric": fabric}


@pytest.fixture(scope="module")
def azures(identities: dict[str, FakeArc]) -> Iterator[dict[str, FakeAzure]]:
    with FakeAzure(bearer_ok=identities["arc"].valid) as arc, \
            FakeAzure(bearer_ok=identities["service_fabric"].valid) as fabric:
        yield {"arc": arc, "service_fabric": fabric}


@pytest.fixture(scope="module")
def clients(identities: dict[str, FakeArc], azures: dict[str, FakeAzure],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, openai.OpenAI]]:
    gateways = []
    try:
        for host in HOSTS:
            config = {"providers": {"az": {"type": "azure", "base_url": azures[host].root_url, "timeout_s": 2,
                                           "entra": {"credential": "managed_identity"}}},
                      "models": {"mini": {"provider": "az", "model": "o4-mini"}}}
            gateways.append(Gateway(tmp_path_factory.mktemp(host), config, env=identities[host].env()).start())
        yield {host: openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0)
               for host, gw in zip(HOSTS, gateways, strict=True)}
    finally:
        for gw in gateways:
            gw.stop()
            assert "Traceback" not in gw.log(), gw.log()


def test_token_from_arc_and_service_fabric_is_fetched_once_then_refreshed(
        clients: dict[str, openai.OpenAI], identities: dict[str, FakeArc], azures: dict[str, FakeAzure]) -> None:
    """Both hosts share the one wait azure-identity imposes (it asks again for a still-valid
    token 30 s after its last ask only), hence the test's 31 s."""
    for host in HOSTS:
        for stream in (False, True, False):
            result = clients[host].chat.completions.create(model="mini", messages=HELLO, stream=stream)  # type: ignore[call-overload]
            if stream:
                list(result)
    challenge, answered = identities["arc"].requests
    assert "authorization" not in challenge["headers"] and challenge["headers"]["metadata"] == "true"
    assert answered["headers"]["authorization"].startswith("Basic ")
    assert answered["query"] == {"api-version": "2020-06-01", "resource": "https://cognitiveservices.azure.com"}
    [asked] = identities["service_fabric"].requests
    assert asked["headers"]["secret"] == "sf-identity-header-secret"
    assert asked["query"] == {"api-version": "2019-07-01-preview", "resource": "https://cognitiveservices.azure.com"}
    for host, prefix in (("arc", "arc"), ("service_fabric", "sf")):
        assert [r["headers"]["authorization"] for r in azures[host].requests] == [f"Bearer {prefix}-access-1"] * 3
    time.sleep(31)
    for host in HOSTS:
        began = time.monotonic()
        clients[host].chat.completions.create(model="mini", messages=HELLO)  # starts the refresh, does not wait
        assert time.monotonic() - began < 1.0
    deadline = time.monotonic() + 5
    while any(len(i.tokens) < 2 for i in identities.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for host, prefix in (("arc", "arc"), ("service_fabric", "sf")):
        clients[host].chat.completions.create(model="mini", messages=HELLO)
        used = [r["headers"]["authorization"] for r in azures[host].requests]
        assert used[3:] == [f"Bearer {prefix}-access-1", f"Bearer {prefix}-access-2"]
        assert identities[host].valid(used[4])
    assert len(identities["arc"].requests) == 4  # the refresh met the challenge again
