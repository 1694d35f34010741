"""Long-prompt price tiers (Gemini 2.5 Pro over 200k tokens, Claude on Vertex AI and Bedrock
...) are priced as genai-prices prices them: a prompt over a tier's start pays that tier's
prices for all its tokens, not the base tier's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import genai_prices
import pytest

from tallygate.core.money import usd
from tallygate.pipeline.budget import priced_bound
from tallygate.pipeline.pricing import PriceBook
from tallygate.types import Usage

TODAY = dt.date(2026, 12, 6)


def test_gemini_pro_over_200k_tokens_pays_the_long_prompt_prices_for_every_token() -> None:
    rate = PriceBook().rate("gemini", "gemini-2.5-pro", None, TODAY)
    under = Usage(input_tokens=200_000, output_tokens=1000, cached_tokens=50_000)
    over = Usage(input_tokens=200_001, output_tokens=1000, cached_tokens=50_000)
    assert usd(rate.cost(under)) == (150_000 * Decimal("1.25") + 50_000 * Decimal("0.125") + 1000 * 10) / 10**6
    assert usd(rate.cost(over)) == (150_001 * Decimal("2.5") + 50_000 * Decimal("0.25") + 1000 * 15) / 10**6


@pytest.mark.parametrize(("price_list", "provider_id", "model"), [
    ("gemini", "google", "gemini-2.5-pro"), ("vertex", "google", "gemini-2.5-pro"),
    ("vertex", "google", "claude-sonnet-4-5"), ("bedrock", "aws", "global.anthropic.claude-haiku-5-5"),
])
@pytest.mark.parametrize("prompt", [1_000, 100_000, 100_001, 200_000, 200_001, 900_000])
def test_tiered_cost_equals_genai_prices_own_calculation(price_list: str, provider_id: str, model: str,
                                                         prompt: int) -> None:
    rate = PriceBook().rate(price_list, model, None, TODAY)
    ours = usd(rate.cost(Usage(input_tokens=prompt, output_tokens=777, cached_tokens=prompt // 4,
                               cache_write_tokens=prompt // 10)))
    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=prompt, output_tokens=777, cache_read_tokens=prompt // 4,
                           cache_write_tokens=prompt // 10),
        model, provider_id=provider_id, genai_request_timestamp=dt.datetime.combine(TODAY, dt.time(12), dt.UTC))
    assert rate.tiers and ours == theirs.total_price > 0


@pytest.mark.parametrize("prompt", [100_000, 200_000, 200_001, 900_000])
def test_the_reserved_worst_case_covers_the_long_prompt_tier_a_prompt_may_reach(prompt: int) -> None:
    """A prompt bound over a tier's start is reserved at that tier's prices: what the request
    may be billed never exceeds what was reserved for it."""
    rate = PriceBook().rate("gemini", "gemini-2.5-pro", None, TODAY)
    billed = rate.cost(Usage(input_tokens=prompt, output_tokens=5000))
    reserved = priced_bound(prompt, 5000, [rate])
    assert billed <= reserved
    if prompt > 200_000:  # every token at the long-prompt price: $2.50 in, $15 out
        assert usd(reserved) == (prompt * Decimal("2.5") + 5000 * 15) / 10**6
