"""Hard monthly limits under concurrency, with requests that die mid-way, and live limit changes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hello budget"}]


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """A process of its own: hundreds of concurrent clients and client timeouts must not share
    this process's GIL with the server they are racing."""
    from tests.conftest import standard_config

    gw = Gateway(tmp_path_factory.mktemp("gw"), standard_config(upstream)).start()
    yield gw
    gw.stop()


def _new_key(gateway: Gateway, name: str, limit: str) -> dict:
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": name, "monthly_limit": limit})
    assert status == 201, rec
    return rec


def _me(gateway: Gateway, key: str) -> dict:
    status, me = gateway.get("/v1/key", key=key)
    assert status == 200
    return me


def _ledger_spend(gateway: Gateway, key_id: str) -> Decimal:
    total, cursor = Decimal(0), None
    while True:
        _, page = gateway.get(f"/v1/logs?key={key_id}&limit=500" + (f"&cursor={cursor}" if cursor else ""))
        total += sum(Decimal(r["cost"]) for r in page["data"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return total


def _settled(gateway: Gateway, key: str, rec_id: str) -> tuple[dict, Decimal]:
    """Wait until nothing is reserved and the ledger has caught up with the in-memory spend."""
    deadline = time.monotonic() + 15
    while True:
        me = _me(gateway, key)
        ledger = _ledger_spend(gateway, rec_id)
        if (me["monthly_reserved"] == "0" and Decimal(me["monthly_spend"]) == ledger) \
                or time.monotonic() > deadline:
            return me, ledger
        time.sleep(0.1)


def test_200_concurrent_requests_never_pass_the_limit(gateway: Gateway, upstream) -> None:
    # Each request costs about $0.006 and reserves its worst case (~$0.06, a token a byte): room for about 20.
    rec = _new_key(gateway, "burst", "1.20")

    async def fire() -> list[object]:
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0,
                                      timeout=30) as client:
            calls = [client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
                     for _ in range(200)]
            return await asyncio.gather(*calls, return_exceptions=True)

    upstream.clear()
    results = asyncio.run(fire())
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert len(ok) + len(refused) == 200, [r for r in results if isinstance(r, Exception)][:3]
    assert 10 <= len(ok) < 200 and refused
    assert refused[0].body["type"] == "budget_exceeded"
    assert refused[0].response.headers["x-should-retry"] == "false"
    assert len([r for r in upstream.requests if r["path"].endswith("/chat/completions")]) == len(ok)
    me, ledger = _settled(gateway, rec["key"], rec["id"])
    assert Decimal(me["monthly_spend"]) == ledger <= Decimal("1.20")
    refusal = gateway.log_record(refused[0].response.headers["x-request-id"])
    assert refusal["status"] == 402 and refusal["error"]["type"] == "budget_exceeded"


def test_cancelled_requests_leave_no_phantom_reservations(gateway: Gateway) -> None:
    rec = _new_key(gateway, "cancels", "100")

    async def fire_and_abandon() -> None:
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0,
                                      timeout=0.1) as client:  # the provider takes 0.4 s
            calls = [client.chat.completions.create(model="priced-slow", messages=HELLO, max_tokens=10)
                     for _ in range(30)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            # Abandoned by the client: a timeout, or on a loaded machine a connect that timed out.
            assert all(isinstance(r, openai.APIConnectionError) for r in results), \
                [repr(r) for r in results if not isinstance(r, openai.APIConnectionError)][:3]

    asyncio.run(fire_and_abandon())
    assert Decimal(_me(gateway, rec["key"])["monthly_reserved"]) > 0  # still in flight upstream
    me, ledger = _settled(gateway, rec["key"], rec["id"])
    assert me["monthly_reserved"] == "0"
    assert Decimal(me["monthly_spend"]) == ledger > 0


def test_limit_changes_apply_to_the_next_request(gateway: Gateway) -> None:
    rec = _new_key(gateway, "adjustable", "100")
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
        status, _, _ = gateway.request("PUT", f"/v1/manage/apikey/{rec['id']}",
                                       json.dumps({"monthly_limit": "0.001"}).encode(), ADMIN_KEY,
                                       {"Content-Type": "application/json"})
        assert status == 200
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
        assert exc.value.status_code == 402
        out = gateway.cli("keys", "update", rec["id"], "--limit", "50")  # another process
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 5
        while True:
            try:
                client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
                break
            except openai.APIStatusError as err:
                assert err.status_code == 402 and time.monotonic() < deadline
                time.sleep(0.1)


def test_spend_survives_a_restart(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    gw = Gateway(tmp_path, standard_config(upstream)).start()
    try:
        rec = _new_key(gw, "restarted", "0.05")
        with openai.OpenAI(base_url=gw.base_url, api_key=rec["key"], max_retries=0) as client:
            spent = 0
            while True:
                try:
                    client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
                    spent += 1
                except openai.APIStatusError as err:
                    assert err.status_code == 402
                    break
        before = _me(gw, rec["key"])["monthly_spend"]
        gw.stop()
        gw.start()
        assert _me(gw, rec["key"])["monthly_spend"] == before
        with openai.OpenAI(base_url=gw.base_url, api_key=rec["key"], max_retries=0) as client:
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10)
    finally:
        gw.stop()
