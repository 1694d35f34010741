"""Cost of a request, exact, in integer picodollars (1e-12 USD).

Prices come from the model's `pricing` override in config when it has one, else from the
`genai-prices` snapshot shipped with the installed package (offline, Decimal prices). A price is
resolved once per model and UTC day and kept as integer picodollars per token, so pricing a
response is a few integer multiplications. Prices with more than six decimals per million
tokens are rounded half-even to the picodollar (none in the snapshot today). Each priced record
keeps `source` (`config` or `genai-prices <version>`) so costs can be recomputed. Long-prompt
tiers (Gemini 2.5 Pro over 200k tokens ...) are kept as whole-request rates (`Rate.tiers`).

Provider-run tools billed per use are priced the same way, per use: web searches and file
searches from the snapshot's `web_searches_kcount` / `storage_searches_kcount` (USD per 1,000
calls), else, for a model the snapshot gives no such price (Claude on Vertex, say), the vendor's
standard price (`TOOL_USD`); code containers from `TOOL_USD` (the snapshot has no price for
them); each overridable in config (`pricing.web_search_per_call` ...). Every long-prompt tier
carries the same fees. What counts as a use, and how many a request may make, is
`pipeline/tool_fees.py`.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from tallygate.settings import PricingOverride
from tallygate.types import Usage

_PER_TOKEN = Decimal(10**6)  # $/Mtok * 1e12 pico/$ / 1e6 tok/Mtok
_PER_CALL = Decimal(10**12)  # $ per call * 1e12 pico/$
_PER_KCALL = Decimal(10**9)  # $/1,000 calls * 1e12 pico/$ / 1e3 calls

# USD per use of a provider-run tool, by price list: (web search per 1,000, file search per 1,000,
# code container per 1 GB). Web and file searches are used only where the snapshot has no price
# for the model. OpenAI: $10 / 1,000 web searches, $2.50 / 1,000 file searches, $0.03 per 1 GB
# container (4 GB $0.12 ... 64 GB $1.92, as many units) [1]. Anthropic: $10 / 1,000 searches;
# code execution $0.05 per container-hour [2], with no duration reported, so a request that used
# a container is charged one hour: more than any request can run (the gateway's upstream timeout
# is at most 600 s by default), never less than the bill.
# [1] https://platform.openai.com/docs/pricing#built-in-tools
# [2] https://docs.claude.com/en/docs/agents-and-tools/tool-use/code-execution-tool#usage-and-pricing
_OPENAI_TOOLS = (Decimal(10), Decimal("2.5"), Decimal("0.03"))
_ANTHROPIC_TOOLS = (Decimal(10), None, Decimal("0.05"))
TOOL_USD: dict[str, tuple[Decimal | None, Decimal | None, Decimal | None]] = {
    "openai": _OPENAI_TOOLS, "azure": _OPENAI_TOOLS, "mock": _OPENAI_TOOLS,
    "anthropic": _ANTHROPIC_TOOLS, "vertex": _ANTHROPIC_TOOLS, "bedrock": _ANTHROPIC_TOOLS}


def _pico_per_token(per_mtok: Decimal | None) -> int | None:
    if per_mtok is None:
        return None
    return int((Decimal(per_mtok) * _PER_TOKEN).to_integral_value(ROUND_HALF_EVEN))


def _pico(usd: Decimal | None, scale: Decimal = _PER_CALL) -> int:
    return 0 if usd is None else int((Decimal(usd) * scale).to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Rate:
    """Picodollars per token for each kind of token. `cache_write` is the 5-minute cache write
    (Anthropic's default TTL, and every other provider's only one), `cache_write_1h` the
    1-hour one. `web_search`, `file_search` and `code_session` are picodollars per use of
    those provider-run tools (a code session per 1 GB container). `tiers` are long-prompt
    prices, `(start, rate)` in ascending order: a request whose prompt (`input_tokens`, cache
    included) is over `start` tokens pays `rate` for all its tokens (the "cliff" Google,
    Anthropic and AWS price by, as genai-prices models it)."""

    input: int
    output: int
    cached: int
    cache_write: int
    source: str
    cache_write_1h: int = 0
    web_search: int = 0
    file_search: int = 0
    code_session: int = 0
    tiers: tuple[tuple[int, Rate], ...] = ()
    variants: tuple[tuple[tuple[str, str], Rate], ...] = ()  # ((field, value), rate): `under`
    input_audio: int = 0  # audio input and output tokens (0: no audio price listed, the text price)
    output_audio: int = 0

    def under(self, context: PriceContext) -> Rate:
        """The rate of a request asking for `context` (`price_context`): the dearest variant it
        selects (a request may ask for a fast speed and a priority tier at once), else this one."""
        if not context or not self.variants:
            return self
        chosen = [rate for when, rate in self.variants if when in context]
        return max(chosen, key=lambda r: (r.output, r.input), default=self)

    def cost(self, u: Usage) -> int:
        for start, tier in reversed(self.tiers):
            if u.input_tokens > start:
                return tier.cost(u)
        uncached = max(0, u.input_tokens - u.cached_tokens - u.cache_write_tokens)
        hour = min(u.cache_write_1h_tokens, u.cache_write_tokens)
        heard = min(u.audio_input_tokens, uncached) if self.input_audio else 0
        spoken = min(u.audio_output_tokens, u.output_tokens) if self.output_audio else 0
        return ((uncached - heard) * self.input + heard * self.input_audio + u.cached_tokens * self.cached
                + (u.cache_write_tokens - hour) * self.cache_write + hour * self.cache_write_1h
                + (u.output_tokens - spoken) * self.output + spoken * self.output_audio + self.tool_fees(u))

    def tool_fees(self, u: Usage) -> int:
        """What the provider-run tools of `u` cost, in picodollars."""
        return u.web_searches * self.web_search + u.file_searches * self.file_search \
            + u.code_sessions * self.code_session

    @classmethod
    def from_mtok(cls, source: str, input: Decimal, output: Decimal | None = None,
                  cached: Decimal | None = None, cache_write: Decimal | None = None,
                  cache_write_1h: Decimal | None = None, claude: bool = False) -> Rate:
        """A rate from USD per million tokens; a missing cache price is the input price, a
        missing 1-hour write price the (5-minute) write price, except for a `claude` model
        (`is_claude`), whose missing write prices are Anthropic's: the 5-minute write 1.25 times
        the input price, the 1-hour write 8/5 of the 5-minute one (2 times the input). The input
        price would bill 5-minute writes 20 % under, the 5-minute price 1-hour writes 37.5 %."""
        inp = _pico_per_token(input) or 0
        if claude and cache_write is None:
            cache_write = Decimal(input or 0) * FIVE_MINUTE_WRITE
        write = inp if cache_write is None else _pico_per_token(cache_write) or 0
        if cache_write_1h is None:
            cache_write_1h = Decimal(cache_write if cache_write is not None else input or 0) \
                * (ONE_HOUR_WRITE if claude else 1)
        return cls(input=inp, output=_pico_per_token(output) or 0,
                   cached=inp if cached is None else _pico_per_token(cached) or 0,
                   cache_write=write, cache_write_1h=_pico_per_token(cache_write_1h) or 0, source=source)


UNPRICED = Rate(0, 0, 0, 0, "unpriced")
# Anthropic's cache write prices: the 5-minute one over the input price, the 1-hour one over the
# 5-minute one (2 and 1.25 times the input price)
FIVE_MINUTE_WRITE = Decimal(5) / Decimal(4)
ONE_HOUR_WRITE = Decimal(8) / Decimal(5)


def is_claude(price_list: str, model: str, listed: Rate | None = None) -> bool:
    """Whether `model` is one of Anthropic's (the only models with 1-hour cache writes): on
    Anthropic's own API, named so (`claude-...`, `anthropic.claude-...` on Bedrock), or listed
    with a 1-hour write price of its own (an opaque Bedrock inference profile)."""
    return price_list == "anthropic" or "claude" in model.lower() \
        or (listed is not None and listed.cache_write_1h != listed.cache_write)
PriceContext = tuple[tuple[str, str], ...]  # the (field, value) pairs of a body that select a price variant
# Body fields a provider prices by (genai-prices' variant keys; Anthropic's `inference_geo: "us"`,
# billed at 1.1 times the price, is listed by none yet).
PRICED_FIELDS = ("service_tier", "speed", "inference_geo")


# The values of those fields that ask for the standard price or a cheaper one.
_STANDARD = {"service_tier": frozenset({"auto", "default", "standard", "standard_only", "flex"}),
             "speed": frozenset({"standard"}), "inference_geo": frozenset({"global"})}


# Claude's 1M-token context, asked for by the `anthropic-beta: context-1m-...` header: a prompt
# over LONG_PROMPT tokens is then billed at the long-context price (Anthropic, Vertex and Bedrock
# all bill Sonnet 4 / 4.5 so: twice the input price, 1.5 times the output price).
LONG_CONTEXT = ("anthropic-beta", "context-1m")
LONG_PROMPT = 200_000


def unpriced_tier(rate: Rate, context: PriceContext, prompt: int = 0) -> tuple[str, str] | None:
    """The (field, value) of `context` asking for a dearer tier that `rate` has no price for
    (genai-prices lists no such variant of the model: Anthropic bills claude-opus-4-6's fast mode
    at six times its standard price, which the snapshot does not give), if any; `LONG_CONTEXT`
    when a prompt of up to `prompt` tokens may pass `LONG_PROMPT` and `rate` has no long-prompt
    tier (the snapshot gives Bedrock's Claude Sonnet 4 and 4.5 none). None for a rate set in
    config, whose one price holds whatever the tier."""
    if not rate.source.startswith("genai-prices"):
        return None
    listed = {when for when, _ in rate.variants}
    for when in context:
        if when == LONG_CONTEXT:
            if prompt > LONG_PROMPT and not rate.tiers:
                return when
        elif when[1] not in _STANDARD.get(when[0], ()) and when not in listed:
            return when
    return None


def price_context(body: dict[str, Any]) -> PriceContext:
    """The fields of `body` that may select a dearer price (`Rate.under`)."""
    return tuple((name, value) for name in PRICED_FIELDS if isinstance(value := body.get(name), str))
# Price lists where a model without a price is a start-up error, not a silent $0: a cloud's
# catalogue is sold at list prices, so a model genai-prices does not list (Cohere on Bedrock, an
# application inference profile's opaque id) needs its `pricing:` in config.
MUST_PRICE = frozenset({"bedrock"})
# Price lists whose unpriced models are free to run (self-hosted servers, the in-process mock);
# an unpriced model of any other list is a start-up warning.
FREE_TO_RUN = frozenset({"self-hosted", "mock"})
_today: tuple[int, dt.date] = (-1, dt.date.min)  # (days since the epoch, that date)


def _utc_today() -> dt.date:
    """Today's UTC date, made once a day (rates are looked up several times a request)."""
    global _today
    day = int(time.time() // 86400)
    if day != _today[0]:
        _today = (day, dt.date(1970, 1, 1) + dt.timedelta(days=day))
    return _today[1]


class PriceBook:
    """Resolves a `Rate` per configured model; genai-prices lookups are cached per UTC day."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str | None, dt.date], Rate] = {}

    def rate(self, price_list: str, upstream_model: str, override: PricingOverride | None,
             today: dt.date | None = None) -> Rate:
        """The rate of `upstream_model` on `price_list` (`ProviderConfig.price_list`): the
        override if any, else that genai-prices provider's price on `today`."""
        today = today or _utc_today()
        if override is not None:
            listed = self.rate(price_list, upstream_model, None, today)  # its tool fees, unless overridden
            return replace(Rate.from_mtok("config", override.input_per_mtok, override.output_per_mtok,
                                          override.cached_input_per_mtok, override.cache_write_per_mtok,
                                          override.cache_write_1h_per_mtok,
                                          is_claude(price_list, upstream_model, listed)),
                           web_search=_pico(override.web_search_per_call) if override.web_search_per_call
                           is not None else listed.web_search,
                           file_search=_pico(override.file_search_per_call) if override.file_search_per_call
                           is not None else listed.file_search,
                           code_session=_pico(override.code_session_per_call) if override.code_session_per_call
                           is not None else listed.code_session)
        key = (price_list, upstream_model, None, today)
        rate = self._cache.get(key)
        if rate is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            rate = self._cache[key] = _lookup(price_list, upstream_model, today)
        return rate


# Which genai-prices providers to ask, in order (None: any provider that knows the model). An
# OpenAI-compatible server may serve another vendor's model; the mock serves any name; a named
# service (a preset, a cloud) is priced by its own list only, never by another vendor's.
_CANDIDATES: dict[str, list[str | None]] = {
    "openai": ["openai", None], "anthropic": ["anthropic", None], "mock": [None, "openai", "anthropic"],
    "self-hosted": [],
    "azure": ["azure", "openai"],  # Azure lists few models; the rest are sold at OpenAI's price
    "gemini": ["google"], "vertex": ["google"], "bedrock": ["aws"],
}


@functools.lru_cache(maxsize=1024)
def listed_window(price_list: str, model: str) -> int | None:
    """The context window genai-prices gives `model` on `price_list`, if any."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for provider_id in _CANDIDATES.get(price_list, [price_list]):
        try:
            _, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
        return info.context_window or None
    return None


def _lookup(price_list: str, model: str, today: dt.date) -> Rate:
    import genai_prices
    from genai_prices import data_snapshot
    from genai_prices.types import TieredPrices

    web_k, file_k, container = TOOL_USD.get(price_list, (None, None, None))
    code = _pico(container)
    snapshot = data_snapshot.get_snapshot()
    for provider_id in _CANDIDATES.get(price_list, [price_list]):
        try:
            _, info = snapshot.find_provider_model(model, None, provider_id, None)
            break
        except LookupError:
            continue
    else:
        return replace(UNPRICED, web_search=_pico(web_k, _PER_KCALL), file_search=_pico(file_k, _PER_KCALL),
                       code_session=code)
    at_noon = dt.datetime.combine(today, dt.time(12), dt.UTC)
    prices = info.get_prices(at_noon)

    names = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")

    def at(name: str, tokens: int, prices: Any = prices) -> Decimal | None:
        """The price of `name` for a prompt over `tokens` tokens (tiered or flat)."""
        value = getattr(prices, name, None)
        if not isinstance(value, TieredPrices):
            return value
        return next((t.price for t in reversed(value.tiers) if t.start <= tokens), value.base)

    web, file = at("web_searches_kcount", 0), at("storage_searches_kcount", 0)  # else the vendor's price

    def with_fees(rate: Rate) -> Rate:
        return replace(rate, web_search=_pico(web_k if web is None else web, _PER_KCALL),
                       file_search=_pico(file_k if file is None else file, _PER_KCALL), code_session=code)

    def rate(tokens: int, prices: Any, source: str) -> Rate:
        inp, out, read, write, write_1h = (at(name, tokens, prices) for name in names)
        heard, spoken = at("input_audio_mtok", tokens, prices), at("output_audio_mtok", tokens, prices)
        return replace(with_fees(Rate.from_mtok(source, inp or Decimal(0), out, read, write, write_1h,
                                                is_claude(price_list, model))),
                       input_audio=_pico_per_token(heard) or 0, output_audio=_pico_per_token(spoken) or 0)

    def tiered(prices: Any, source: str) -> Rate:
        starts = sorted({t.start for name in names if isinstance(v := getattr(prices, name, None), TieredPrices)
                         for t in v.tiers})
        return replace(rate(0, prices, source), tiers=tuple((start, rate(start, prices, source)) for start in starts))

    if at("input_mtok", 0) is None:
        return with_fees(UNPRICED)
    source = f"genai-prices {genai_prices.__version__}"
    whens = {(k, v) for variant in info.price_variants or () for k, v in variant.when.items()
             if len(variant.when) == 1 and k in PRICED_FIELDS}
    standard = tiered(prices, source)
    variants = tuple((when, dearer) for when in sorted(whens)
                     if _prices(dearer := tiered(info.get_prices(at_noon, dict([when])),
                                                 f"{source} ({when[0]}={when[1]})")) != _prices(standard))
    return replace(standard, variants=variants)


def _prices(rate: Rate) -> tuple[int, ...]:
    return rate.input, rate.output, rate.cached, rate.cache_write, rate.cache_write_1h
