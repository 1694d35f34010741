"""Rate limits shared by processes and replicas through Redis, in the budget's round trip.

`RatedRedisBudget` is the Redis budget engine (`pipeline/redis_budget.py`, unchanged) plus
`reserve_rated`: one call of `redis_ratelimit_lua.RESERVE_RATED`, batched on the budget's one
connection like every reservation, checks the rate limits, reserves the budget and counts the
request against the rate limits, all or nothing, in one round trip. `RedisLimiter` settles what
it admitted (queued, sent in the same pipelined round trips as budget settles: never on the
request path).

When Redis cannot be reached, rate limits are not dropped (as `budgets_unavailable: open` would
drop budgets): each process falls back to its own in-memory limiter, admitting its share of each
limit: `max(1, limit // N)`, N the processes it last saw sharing Redis (its heartbeat counts
them every TTL / 3). So the N processes together admit at most `max(limit, N)` in any window
of the outage, as budgets' open allowance is each process's share. A process started during the
outage has seen no one: it takes the count the last process on its host saw (kept in the
journal directory, `peers_file`), so a fleet restarted during an outage keeps its shares; with
no such count it admits nothing under a rate limit (503 `budget_unavailable`) until Redis
answers. What Redis admitted just before the outage is not known to the fallback: a window
across its start can hold that too.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from tallygate.errors import BudgetUnavailable, RateLimited
from tallygate.pipeline.budget import Hold, Scope, StaleScopes, counters, refusal
from tallygate.pipeline.ratelimit import (
    CONCURRENCY_RETRY_S,
    MemoryLimiter,
    RateHold,
    RuleUsage,
    TargetAdmission,
    limit_headers,
    refused,
)
from tallygate.pipeline.ratelimit_rules import Rule
from tallygate.pipeline.redis_batch import ScriptBatch
from tallygate.pipeline.redis_budget import RedisBudget, unsettled
from tallygate.pipeline.redis_lua import HEARTBEAT, SETTLE
from tallygate.pipeline.redis_ratelimit_lua import RATE_SETTLE, RATE_USAGE, RESERVE_RATED

log = logging.getLogger("tallygate.ratelimit.redis")
_KINDS = {1: "requests per minute", 2: "tokens per minute", 3: "requests in flight at once",
          4: "requests per second"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


class _PeerCount(AsyncScript):
    """The heartbeat script, remembering how many live processes it last saw (this included;
    0 until it has seen any) and keeping that count in `file` for a process started later."""

    peers = 0
    file: Path | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        res = await super().__call__(*args, **kwargs)
        peers = max(1, int(res))
        if peers != self.peers and self.file is not None:
            _keep(self.file, peers)
        self.peers = peers
        return res


def _keep(file: Path, peers: int) -> None:
    """Write the count whole (another process may read it at any moment)."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        part = file.with_name(f"{file.name}.{os.getpid()}")
        part.write_text(f"{peers}\n")
        os.replace(part, file)
    except OSError as exc:
        log.warning("keeping the count of processes sharing Redis in %s failed: %s", file, exc)


def _kept(file: Path | None) -> int:
    """The count the last process on this host saw, 0 when none is kept."""
    try:
        return max(0, int(file.read_text())) if file is not None else 0
    except (OSError, ValueError):
        return 0


def share(rule: Rule, peers: int) -> Rule:
    """A process's share of `rule` among `peers` processes: each limit // peers, at least 1."""
    if peers <= 1:
        return rule

    def part(limit: int | None) -> int | None:
        return None if limit is None else max(1, limit // peers)

    return rule._replace(requests_per_minute=part(rule.requests_per_minute),
                         tokens_per_minute=part(rule.tokens_per_minute), max_concurrent=part(rule.max_concurrent),
                         requests_per_second=part(rule.requests_per_second))


class RatedRedisBudget(RedisBudget):
    """The Redis budget engine, able to admit rate limits in its reservation's round trip."""

    def __init__(self, *args: Any, peers_file: Path | None = None, **kwargs: Any) -> None:
        """`peers_file`: where the count of processes sharing Redis is kept for a process that
        starts while Redis is unreachable (the journal directory: shared by a host's processes)."""
        super().__init__(*args, **kwargs)
        self._rated = ScriptBatch(self._hot, self._hot.register_script(RESERVE_RATED), on_orphan=self._orphan_rated)
        self._rate_settle = self._aio.register_script(RATE_SETTLE)
        self._rate_usage = self._aio.register_script(RATE_USAGE)
        self._ids = itertools.count()
        self.fallback = MemoryLimiter()  # while Redis is unreachable: each process limits itself to its share
        self._heartbeat = self._peers = _PeerCount(self._aio, HEARTBEAT)
        self._peers.file = peers_file
        self._peers.peers = _kept(peers_file)  # until the first heartbeat answers
        self._rate_queue: list[list[Any]] = []
        self.rate_round_trips = 0  # reservations sent with rate limits (for tests and benchmarks)

    async def reserve_rated(self, scopes: Sequence[Scope], amount: int, rules: Sequence[Rule],
                            tokens: int, at_ms: int | None = None, request_id: str = "") -> tuple[Hold, RateHold]:
        hold, rate, _ = await self.reserve_routed(scopes, amount, rules, tokens, at_ms, request_id)
        return hold, rate

    async def reserve_routed(self, scopes: Sequence[Scope], amount: int, rules: Sequence[Rule], tokens: int,
                             at_ms: int | None = None, request_id: str = "",
                             first: Sequence[Rule] = ()) -> tuple[Hold, RateHold, TargetAdmission]:
        """`reserve_rated`, and in the same round trip, once the request is admitted, its
        admission under `first` (a policy's first target's model limits): that target's hold, or
        the refusal to answer when it is tried (None without `first`)."""
        at = self.now_ms() if at_ms is None else at_ms
        ids = counters(scopes, self.windows, at)
        limited = [s for s in scopes if s.limit is not None]
        noted = unsettled(request_id, ids, self.process)
        request = request_id if noted else ""
        uid = f"{self.process}:{next(self._ids)}"
        head: list[Any] = [len(rules), tokens, uid, len(first)]
        for r in (*rules, *first):
            head += (r.id, _opt(r.requests_per_minute), _opt(r.tokens_per_minute), _opt(r.max_concurrent),
                     _opt(r.requests_per_second))
        args: list[Any] = [*head, self._p, noted, self.process, amount if limited else 0, self._ttl_ms,
                           self.loaded_version]
        if limited and amount:
            args += self._limits(limited, at)
        hold = RateHold(tuple(rules), tokens, remote=uid)
        for _ in range(3):
            try:
                self.rate_round_trips += 1
                res = await self._rated(args)
            except (RedisError, OSError) as exc:
                return self._outage(ids, limited, amount, exc, rules, tokens, first)
            code = int(res[0])
            if code == 0:
                values = [int(x) for x in res[1:]]
                hold.headers = _headers(rules, values)
                held = tuple(s.id for s in limited) if limited and amount else ()
                return Hold(ids, held, amount if held else 0, request), hold, _target(first, tokens, uid, values,
                                                                                     len(rules))
            if code == 3:
                raise StaleScopes(_text(res[1]))
            if code == 4:
                raise _refusal(rules, tokens, [int(x) for x in res[1:]])
            if code == 1:
                raise refusal(limited[int(res[1]) - 1], int(res[2]), int(res[3]), amount)
            try:
                await self.rebuild(self.windows.at(limited[int(res[1]) - 1].period, at))
            except Exception as exc:
                return self._outage(ids, limited, amount, exc, rules, tokens, first)
        return self._outage(ids, limited, amount, RuntimeError("the window's counters could not be built"),
                            rules, tokens, first)

    def _outage(self, ids: tuple[str, ...], limited: Sequence[Scope], amount: int, exc: BaseException,
                rules: Sequence[Rule], tokens: int, first: Sequence[Rule]) -> tuple[Hold, RateHold, TargetAdmission]:
        """Redis is unreachable: this process's share of the rate limits, then the budgets'
        open allowance (or 503), all or nothing; then the first target's share, as in Redis."""
        rate = self._fallback_admit(rules, tokens)
        try:
            hold = self._unavailable(ids, limited, amount, exc) if limited and amount else Hold(ids, (), 0)
        except BaseException:
            self.fallback.settle(rate, None)
            raise
        if not first:
            return hold, rate, None
        try:
            return hold, rate, self._fallback_admit(first, tokens)
        except (RateLimited, BudgetUnavailable) as err:
            return hold, rate, err

    async def rate_usage(self, rule_ids: Sequence[str]) -> tuple[dict[str, RuleUsage], str]:
        """What each rate limit counts now across every process (one round trip); this
        process's own fallback figures while Redis cannot be reached."""
        if not rule_ids:
            return {}, "redis"
        try:
            res = await self._rate_usage(args=[self._p, *rule_ids])
        except (RedisError, OSError) as exc:
            log.warning("reading rate-limit usage from Redis failed (%s); showing this process's own",
                        type(exc).__name__)
            return self.fallback.usage_now(rule_ids), "process"
        v = [int(x) for x in res]
        return {rid: RuleUsage(requests=v[4 * i], tokens=v[4 * i + 1], in_flight=v[4 * i + 2],
                               requests_last_second=v[4 * i + 3]) for i, rid in enumerate(rule_ids)}, "redis"

    @property
    def peers(self) -> int:
        """The processes sharing this Redis at the last heartbeat (this one included; before
        any, the count kept on this host, or 0)."""
        return self._peers.peers

    def _fallback_admit(self, rules: Sequence[Rule], tokens: int) -> RateHold:
        peers = self._peers.peers
        if rules and not peers:
            self.unavailable += 1
            raise BudgetUnavailable("rate-limit state is unreachable and this process has not seen how many "
                                    "processes share its limits, so it admits no request under a rate limit "
                                    "until it is back")
        return self.fallback.admit_now([share(r, peers) for r in rules], tokens)

    def _orphan_rated(self, args: Sequence[Any], res: Any) -> None:
        """A reservation whose request went away while Redis answered: release all of it (the
        first target's admission too, when it was counted)."""
        if not (isinstance(res, list) and res and res[0] == 0):
            return
        n, m = int(args[0]), int(args[3])
        budget_args = list(args[4 + 5 * (n + m):])
        if len(budget_args) > 6 or budget_args[1]:  # holds, or a request noted unsettled
            self.settle(Hold((), tuple(budget_args[6::3]), int(budget_args[3]),
                             _text(budget_args[1]).partition(" ")[0]), 0)
        counted = n + m if m and int(res[1 + 6 * n]) == 0 else n
        rules = []
        for i in range(counted):
            rid, _, tpm, conc = args[4 + 5 * i:8 + 5 * i]
            rules.append(Rule(rid, "", None, int(tpm) if tpm else None, int(conc) if conc else None))
        self.settle_rate(RateHold(tuple(rules), int(args[1]), remote=args[2]), None)

    def settle_rate(self, hold: RateHold, actual_tokens: int | None) -> None:
        """Queue the settle of a rate admission (sent by the flusher; never blocks)."""
        if not isinstance(hold.remote, str):
            self.fallback.settle(hold, actual_tokens)
            return
        args: list[Any] = [self._p, self.process, hold.remote, "-" if actual_tokens is None else actual_tokens]
        for r in hold.rules:
            args += (r.id, "0" if r.tokens_per_minute is None else "1", "0" if r.max_concurrent is None else "1")
        self._rate_queue.append(args)
        if self._wake is not None:  # the budget's flusher sends both kinds of settle
            self._wake.set()

    async def _flush(self) -> None:
        """The budget's settles and the rate limits' in one pipelined round trip."""
        if not self._rate_queue:
            return await super()._flush()
        batch, self._queue = self._queue, []
        rates, self._rate_queue = self._rate_queue, []
        try:
            batch = await self._held_up(batch)
            for attempt in range(2):
                try:
                    async with self._aio.pipeline(transaction=False) as pipe:
                        for hold, actual in batch:
                            pipe.evalsha(self._settle.sha, 0, *self._settle_args(hold, actual))
                        for args in rates:
                            pipe.evalsha(self._rate_settle.sha, 0, *args)
                        await pipe.execute()
                    return
                except NoScriptError:  # Redis restarted: nothing of this pipeline ran
                    if attempt:
                        raise
                    await self._aio.script_load(SETTLE)
                    await self._aio.script_load(RATE_SETTLE)
        except BaseException:
            self._queue[:0] = batch
            self._rate_queue[:0] = rates
            self._flush_failed = True
            raise


def _headers(rules: Sequence[Rule], values: list[int]) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-* of the tightest limits, from the script's per-rule remaining and resets."""
    best: dict[bytes, tuple[int, int, int]] = {}
    for i, r in enumerate(rules):
        rr, rs, tr, ts, sr, ss = values[6 * i:6 * i + 6]
        for kind, limit, remaining, reset in ((b"requests", r.requests_per_second, sr, ss),
                                              (b"requests", r.requests_per_minute, rr, rs),
                                              (b"tokens", r.tokens_per_minute, tr, ts)):
            if limit is not None and (kind not in best or remaining < best[kind][1]):
                best[kind] = (limit, remaining, reset)
    out: list[tuple[bytes, bytes]] = []
    for kind, (limit, remaining, reset) in best.items():
        out += limit_headers(kind, limit, remaining, reset / 1000)
    return out


def _target(first: Sequence[Rule], tokens: int, uid: str, values: list[int], n: int) -> TargetAdmission:
    """The first target's part of an admission's answer (after the request's `n` rules' six
    figures each): its hold, or its limit's refusal."""
    if not first:
        return None
    answer = values[6 * n:]
    if answer[0] == 0:
        return RateHold(tuple(first), tokens, remote=uid)
    return _refusal(first, tokens, answer[1:])


def _refusal(rules: Sequence[Rule], tokens: int, values: list[int]) -> RateLimited:
    i, kind, wait_ms, used = values[0], values[1], values[2], values[3]
    rule = rules[i - 1]
    if kind == 4:
        assert rule.requests_per_second is not None
        return refused(rule, _KINDS[4], rule.requests_per_second, wait_ms / 1000,
                       limit_headers(b"requests", rule.requests_per_second, 0, wait_ms / 1000))
    if kind == 1:
        assert rule.requests_per_minute is not None
        return refused(rule, _KINDS[1], rule.requests_per_minute, wait_ms / 1000,
                       limit_headers(b"requests", rule.requests_per_minute, 0, wait_ms / 1000))
    if kind == 2:
        assert rule.tokens_per_minute is not None
        tpm = rule.tokens_per_minute
        return refused(rule, _KINDS[2], tpm, None if wait_ms < 0 else wait_ms / 1000,
                       limit_headers(b"tokens", tpm, tpm - used, max(wait_ms, 0) / 1000), tokens)
    assert rule.max_concurrent is not None
    return refused(rule, _KINDS[3], rule.max_concurrent, CONCURRENCY_RETRY_S, [])


class RedisLimiter:
    """The `RateLimiter` of processes sharing Redis: admission happens in the budget's
    reservation (`reserve`); `admit` alone (no budget) takes the same single round trip."""

    shared = True

    def __init__(self, budget: RatedRedisBudget) -> None:
        self.budget = budget

    async def reserve(self, scopes: Sequence[Scope], amount: int, rules: Sequence[Rule], tokens: int,
                      at_ms: int | None = None, request_id: str = "",
                      first: Sequence[Rule] = ()) -> tuple[Hold, RateHold, TargetAdmission]:
        return await self.budget.reserve_routed(scopes, amount, rules, tokens, at_ms, request_id, first)

    async def admit(self, rules: Sequence[Rule], tokens: int) -> RateHold:
        return (await self.budget.reserve_rated((), 0, rules, tokens))[1]

    def settle(self, hold: RateHold, actual_tokens: int | None) -> None:
        self.budget.settle_rate(hold, actual_tokens)

    async def usage(self, rule_ids: Sequence[str]) -> tuple[dict[str, RuleUsage], str]:
        return await self.budget.rate_usage(rule_ids)
