"""Exact pricing in integer picodollars."""

from __future__ import annotations

from decimal import Decimal

from tallygate.core.money import usd
from tallygate.pipeline.pricing import PriceBook, Rate
from tallygate.providers.anthropic_replies import anthropic_usage
from tallygate.settings import PricingOverride
from tallygate.types import Usage


def test_override_prices_are_exact_to_the_picodollar() -> None:
    rate = PriceBook().rate("openai", "anything", PricingOverride(
        input_per_mtok=Decimal("0.0375"), output_per_mtok=Decimal("0.15"),
        cached_input_per_mtok=Decimal("0.01875")))
    cost = rate.cost(Usage(input_tokens=7, output_tokens=3, cached_tokens=2))
    expected = (5 * Decimal("0.0375") + 2 * Decimal("0.01875") + 3 * Decimal("0.15")) / 10**6
    assert usd(cost) == expected
    assert rate.source == "config"


def test_cache_write_tokens_priced_separately_from_reads() -> None:
    rate = Rate.from_mtok("t", Decimal(3), Decimal(15), cached=Decimal("0.3"), cache_write=Decimal("3.75"))
    cost = rate.cost(Usage(input_tokens=1000, output_tokens=10, cached_tokens=600, cache_write_tokens=300))
    assert usd(cost) == (100 * 3 + 600 * Decimal("0.3") + 300 * Decimal("3.75") + 10 * 15) / Decimal(10**6)


def test_snapshot_prices_for_known_models() -> None:
    book = PriceBook()
    rate = book.rate("anthropic", "claude-3-5-haiku-latest", None)
    assert rate.source.startswith("genai-prices ")
    assert usd(rate.cost(Usage(input_tokens=1_000_000))) == Decimal("0.8")
    assert usd(book.rate("openai", "gpt-4o-mini", None).cost(Usage(output_tokens=1_000_000))) == Decimal("0.6")


def test_unknown_model_is_unpriced_not_an_error() -> None:
    rate = PriceBook().rate("openai", "my-finetune-xyz-123", None)
    assert rate.source == "unpriced" and rate.cost(Usage(input_tokens=10)) == 0


def test_usd_of_large_sums_stays_exact() -> None:
    assert usd(123_456_789_012_345_678) == Decimal("123456.789012345678")


def test_one_hour_cache_writes_priced_at_their_own_rate() -> None:
    """Anthropic's 5-minute and 1-hour cache writes each at the snapshot's own price."""
    rate = PriceBook().rate("anthropic", "claude-3-5-haiku-latest", None)
    usage = anthropic_usage({"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 0,
                             "cache_creation_input_tokens": 1000,
                             "cache_creation": {"ephemeral_5m_input_tokens": 400,
                                                "ephemeral_1h_input_tokens": 600}})
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1000, 600)
    expected = (10 * Decimal("0.8") + 400 * Decimal(1) + 600 * Decimal("1.6") + 2 * 4) / Decimal(10**6)
    assert usd(rate.cost(usage)) == expected


def test_cache_write_prices_default_to_anthropics_on_claude() -> None:
    """A Claude model's missing write prices are Anthropic's (5-minute: 1.25 times the input; 1-hour:
    8/5 of the 5-minute one); other models' are the input price (they bill no write premium)."""
    rate = PriceBook().rate("openai", "x", PricingOverride(input_per_mtok=Decimal(1), cache_write_per_mtok=Decimal(2)))
    assert rate.cache_write_1h == rate.cache_write
    for price_list, model in (("anthropic", "x"), ("bedrock", "anthropic.claude-sonnet-4-5"), ("vertex", "claude-x")):
        written = PriceBook().rate(price_list, model, PricingOverride(input_per_mtok=Decimal(3),
                                                                      cache_write_per_mtok=Decimal("3.75")))
        assert usd(written.cache_write_1h * 10**6) == 6
        bare = PriceBook().rate(price_list, model, PricingOverride(input_per_mtok=Decimal(3)))
        assert usd(bare.cache_write_1h * 10**6) == 6 and usd(bare.cache_write * 10**6) == Decimal("3.75")
    plain = PriceBook().rate("openai", "x", PricingOverride(input_per_mtok=Decimal(3)))
    assert plain.cache_write == plain.cache_write_1h == plain.input
    own = PriceBook().rate("anthropic", "x", PricingOverride(input_per_mtok=Decimal(1), cache_write_per_mtok=Decimal(2),
                                                             cache_write_1h_per_mtok=Decimal(3)))
    assert usd(own.cost(Usage(input_tokens=5, cache_write_tokens=5, cache_write_1h_tokens=2))) == \
        (3 * 2 + 2 * 3) / Decimal(10**6)
