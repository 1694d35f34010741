"""An image is bounded at the most its target model can bill for it, per model family."""

from __future__ import annotations

import pytest

from tallygate.pipeline.budget import prompt_bound
from tallygate.pipeline.image_tokens import CLAUDE_IMAGE_TOKENS, MAX_IMAGE_TOKENS, image_tokens


@pytest.mark.parametrize(("model", "tokens"), [
    ("gpt-4o-mini", 48_169), ("gpt-4o-mini-2024-07-18", 48_169),  # 2,833 + 8 tiles x 5,667
    ("gpt-4o", 1_445), ("gpt-4o-2024-08-06", 1_445), ("gpt-4.1", 1_445),  # 85 + 8 x 170
    ("gpt-4.1-mini", 2_489), ("gpt-5-mini", 2_489),  # 1,536 patches x 1.62
    ("gpt-4.1-nano", 3_779), ("o4-mini", 2_642), ("o3", 1_275), ("gpt-5", 1_190),
    ("claude-sonnet-4-5", CLAUDE_IMAGE_TOKENS), ("anthropic.claude-3-5-sonnet-20241022-v2:0", CLAUDE_IMAGE_TOKENS),
    ("claude-opus-4-20250514", CLAUDE_IMAGE_TOKENS), ("claude-sonnet-4@20250514", CLAUDE_IMAGE_TOKENS),
    ("claude-opus-4-6", CLAUDE_IMAGE_TOKENS), ("claude-3-7-sonnet-latest", CLAUDE_IMAGE_TOKENS),
    # Opus 4.7 and later read images at up to 2,576 px a side (about 3.75 MP, 28 px patches)
    ("claude-opus-4-7", 5_000), ("us.anthropic.claude-opus-4-7-v1:0", 5_000), ("claude-opus-4-8@20260601", 5_000),
    ("claude-sonnet-5", 5_000), ("claude-next", 5_000),
    ("my-azure-deployment", MAX_IMAGE_TOKENS), ("gemini-2.5-pro", MAX_IMAGE_TOKENS),
    ("gpt-4o-mini-search-preview", MAX_IMAGE_TOKENS), ("llama-3.1-8b", MAX_IMAGE_TOKENS),
])
def test_each_family_bounds_an_image_at_its_dearest_detail(model: str, tokens: int) -> None:
    assert image_tokens(model) == tokens


def test_no_known_model_bills_an_image_above_the_bound_for_unknown_ones() -> None:
    known = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "o3", "gpt-5", "claude-opus-4-1"]
    assert max(image_tokens(m) for m in known) == MAX_IMAGE_TOKENS


def test_the_prompt_bound_counts_every_image_at_the_given_bound() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}] * 3
    body = {"messages": [{"role": "user", "content": parts}]}
    text_only = prompt_bound({"messages": [{"role": "user", "content": []}]}, "chat")
    commas = 3  # the array's, one a part
    assert prompt_bound(body, "chat", image_tokens("gpt-4o-mini")) == text_only + commas + 3 * 48_169
    assert prompt_bound(body, "chat", CLAUDE_IMAGE_TOKENS) == text_only + commas + 3 * CLAUDE_IMAGE_TOKENS
