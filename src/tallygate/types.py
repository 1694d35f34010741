"""Small value types shared along the request path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_TOKENS_PER_REQUEST = 100_000_000


def tokens(value: object) -> int:
    """A token count from a provider: a non-negative integer below 1e8, else 0."""
    if type(value) is int and 0 <= value < MAX_TOKENS_PER_REQUEST:
        return value
    return 0


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them, normalised to OpenAI's meaning.

    `input_tokens` is the whole prompt, cached and cache-written tokens included (OpenAI's
    `prompt_tokens`); `cached_tokens` and `cache_write_tokens` are the parts of it read from and
    written to the provider's prompt cache; `cache_write_1h_tokens` is the part of the cache
    writes kept for an hour (Anthropic's `ttl: "1h"`, priced at its own rate);
    `reasoning_tokens` is part of `output_tokens`; `audio_input_tokens` and `audio_output_tokens`
    are the parts of `input_tokens` and `output_tokens` that are audio (OpenAI's `audio_tokens`
    details), priced at audio prices. `web_searches`, `file_searches` and
    `code_sessions` count the provider-run tools the provider bills per use (web search calls,
    file search calls, code containers in units of 1 GB; `pipeline/tool_fees.py`).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    file_searches: int = 0
    code_sessions: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: object) -> Usage:
        """Read an OpenAI `usage` object (chat or embeddings), tolerating missing parts.

        Counts the provider got wrong (not an integer, negative, absurdly large) read as 0.
        Cache reads are `prompt_tokens_details.cached_tokens`, or DeepSeek's
        `prompt_cache_hit_tokens` (its documented usage has no `prompt_tokens_details`).
        """
        if not isinstance(usage, dict):
            return cls()
        pd = usage.get("prompt_tokens_details")
        cd = usage.get("completion_tokens_details")
        pd = pd if isinstance(pd, dict) else {}
        cd = cd if isinstance(cd, dict) else {}
        return cls(
            input_tokens=tokens(usage.get("prompt_tokens")),
            output_tokens=tokens(usage.get("completion_tokens")),
            cached_tokens=tokens(pd.get("cached_tokens")) or tokens(usage.get("prompt_cache_hit_tokens")),
            cache_write_tokens=tokens(pd.get("cache_creation_tokens")),
            reasoning_tokens=tokens(cd.get("reasoning_tokens")),
            audio_input_tokens=tokens(pd.get("audio_tokens")),
            audio_output_tokens=tokens(cd.get("audio_tokens")),
        )

    def prompt(self) -> Usage:
        """The prompt's counts alone (input, cache reads and writes, audio input): what a
        provider reports at the start of a stream (Anthropic's `message_start`, Gemini's
        `promptTokenCount`), before it has an output to count."""
        return Usage(input_tokens=self.input_tokens, cached_tokens=self.cached_tokens,
                     cache_write_tokens=self.cache_write_tokens, cache_write_1h_tokens=self.cache_write_1h_tokens,
                     audio_input_tokens=self.audio_input_tokens)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI `usage` object for these counts (without `cost`). Cache writes, which
        OpenAI does not report, go in `prompt_tokens_details.cache_creation_tokens` when there
        are any, so a translated stream's usage chunk reads back (`from_openai`) to the same
        counts and the same cost as the JSON answer."""
        details: dict[str, int] = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            details["cache_creation_tokens"] = self.cache_write_tokens
        completion: dict[str, int] = {"reasoning_tokens": self.reasoning_tokens}
        if self.audio_input_tokens:
            details["audio_tokens"] = self.audio_input_tokens
        if self.audio_output_tokens:
            completion["audio_tokens"] = self.audio_output_tokens
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": details,
            "completion_tokens_details": completion,
        }


@dataclass(slots=True)
class Reported:
    """What a provider has said of a stream's usage before the stream ends: `prompt`, the
    prompt's counts (`Usage.prompt()`) where its first events carry them (Anthropic's
    `message_start`, Gemini's `usageMetadata`), else None. A stream cut short is priced with
    them, estimating only the output (`Call.meter_estimate`)."""

    prompt: Usage | None = None


@dataclass(slots=True)
class Principal:
    """Who is calling: an API key record (or the bootstrap admin) and what it may do."""

    key_id: str | None
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    policy: str | None = None
    monthly_limit: int | None = None  # picodollars per `limit_period`; None means no limit
    limit_period: str = "month"  # the window of monthly_limit (core/windows.py)

    def can(self, area: str, level: str) -> bool:
        order = {"none": 0, "read": 1, "write": 2}
        return order.get(self.permissions.get(area, "none"), 0) >= order[level]
