"""No answered request without its record when the journal's disk fills up and frees again,
under load, on a real small filesystem: requests the journal cannot take are refused with an
OpenAI-shaped 503 `journal_unavailable` (before a provider is called), `/readyz` says why, the
gateway serves again by itself once there is room, and after a kill -9 and the replay the
ledger's successes are exactly the answered requests."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from decimal import Decimal
from pathlib import Path

import aiohttp

from tests.conftest import standard_config
from tests.gateway import Gateway
from tests.store.small_disk import fill, small_disk

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "request_tags": ["load/disk"]}


class Load:
    """Chat requests (half of the clients streaming) until stopped; what each was answered."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.answered: list[str] = []  # ids of 200s whose body was read whole
        self.refusals: list[tuple[int, dict]] = []  # (status, error body); a stream's error event as 200
        self.stopped = asyncio.Event()

    async def client(self, session: aiohttp.ClientSession, stream: bool) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        body = json.dumps({**BODY, "stream": True} if stream else BODY)
        while not self.stopped.is_set():
            async with session.post(self.url + "/v1/chat/completions", data=body, headers=headers) as resp:
                if not stream or resp.status != 200:
                    answer = await resp.json()
                    if resp.status == 200:
                        self.answered.append(answer["id"])
                        continue
                    self.refusals.append((resp.status, answer))
                else:  # answered only if the stream ends with [DONE], after no error event
                    events = [line[6:] for line in (await resp.text()).splitlines() if line.startswith("data: ")]
                    errors = [json.loads(e) for e in events if e.startswith('{"error"')]
                    if events and events[-1] == "[DONE]" and not errors:
                        self.answered.append(resp.headers["x-request-id"])
                        continue
                    self.refusals.append((resp.status, errors[-1]))
            await asyncio.sleep(0.01)

    async def wait_for(self, answered: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < answered:
            assert time.monotonic() < deadline, (len(self.answered), self.refusals[-3:])
            await asyncio.sleep(0.02)


async def _fill_and_free(gw: Gateway, key: str, disk: Path) -> tuple[Load, dict, dict]:
    load = Load(gw.url, key)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        clients = [asyncio.create_task(load.client(session, stream=i % 2 == 1)) for i in range(8)]
        await load.wait_for(200)
        await asyncio.to_thread(fill, disk)  # the disk fills up under load
        refused_before = len(load.refusals)
        deadline = time.monotonic() + 10
        while len(load.refusals) - refused_before < 50:
            assert time.monotonic() < deadline, "nothing was refused on a full disk"
            await asyncio.sleep(0.02)
        async with session.get(gw.url + "/readyz") as resp:
            full = {"http": resp.status, **(await resp.json())}
        answered_full = len(load.answered)
        (disk / "filler").unlink()  # room comes back: no restart
        await load.wait_for(answered_full + 200)
        async with session.get(gw.url + "/readyz") as resp:
            freed = {"http": resp.status, **(await resp.json())}
        load.stopped.set()
        await asyncio.gather(*clients)
    return load, full, freed


def _spend_and_ledger(gw: Gateway, key: str) -> tuple[int, int]:
    """The key's spend as its budget counts it and as the ledger has it (picodollars), once the
    ledger has written everything."""
    deadline = time.monotonic() + 10
    while True:
        status, ready = gw.get("/readyz", key=None)
        if ready["ledger"]["pending_records"] == 0 and ready["ledger"]["held_records"] == 0:
            break
        assert time.monotonic() < deadline, ready
        time.sleep(0.1)
    status, mine = gw.get("/v1/key", key=key)
    assert status == 200, mine
    recorded = sum(r["cost_pico"] for r in gw.ledger_rows() if r["key_name"] == "disk")
    return int(Decimal(mine["monthly_spend"]) * 10**12), recorded


def test_a_journal_disk_that_fills_and_frees_under_load_loses_no_answered_request(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with small_disk(tmp_path / "disk", "8m") as disk:
        gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_JOURNAL_DIR": str(disk / "journal")})
        gw.start()
        try:
            key = gw.create_key("disk", team="ops")
            load, full, freed = asyncio.run(_fill_and_free(gw, key, disk))
            counted, recorded = _spend_and_ledger(gw, key)
            gw.stop(signal.SIGKILL)  # no final flush: what was journaled is replayed at the next start
            gw.start()
            rows = gw.ledger_rows()
        finally:
            gw.stop()
    successes = {r["id"] for r in rows if r["status"] == 200 and r["key_name"] == "disk"}
    print(f"disk full under load: {len(load.answered)} answered, {len(successes)} successes in the ledger, "
          f"{len(set(load.answered) - successes)} answered but missing, {len(load.refusals)} refused")
    assert successes == set(load.answered)  # exact: none lost, none recorded as answered that was not
    assert counted == recorded  # the key's spend counts what the ledger says each request cost
    assert len(rows) == len({r["id"] for r in rows})
    assert full["http"] == 503 and full["failed"] == "ledger", full
    assert "ENOSPC" in full["reason"] and "journal_unavailable" in full["reason"]
    assert freed["http"] == 200, freed
    assert load.refusals and all(status in (200, 503) for status, _ in load.refusals)  # 200: a stream's error event
    for _, body in load.refusals:
        assert body["error"]["code"] == "journal_unavailable" and body["error"]["type"] == "server_error"
        assert set(body["error"]) == {"message", "type", "param", "code"}
