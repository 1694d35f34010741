"""Small value types shared along the request path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them, normalised to OpenAI's meaning.

    `input_tokens` is the whole prompt, cached and cache-written tokens included (OpenAI's
    `prompt_tokens`); `cached_tokens` and `cache_write_tokens` are the parts of it read from and
    written to the provider's prompt cache; `reasoning_tokens` is part of `output_tokens`.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: dict | None) -> Usage:
        """Read an OpenAI `usage` object (chat or embeddings), tolerating missing parts."""
        if not usage:
            return cls()
        prompt = usage.get("prompt_tokens") or 0
        out = usage.get("completion_tokens") or 0
        pd = usage.get("prompt_tokens_details") or {}
        cd = usage.get("completion_tokens_details") or {}
        return cls(
            input_tokens=int(prompt),
            output_tokens=int(out),
            cached_tokens=int(pd.get("cached_tokens") or 0),
            cache_write_tokens=int(pd.get("cache_creation_tokens") or 0),
            reasoning_tokens=int(cd.get("reasoning_tokens") or 0),
        )

    def to_openai(self) -> dict:
        """The OpenAI `usage` object for these counts (without `cost`)."""
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass(slots=True)
class Principal:
    """Who is calling: an API key record (or the bootstrap admin) and what it may do."""

    key_id: str | None
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    policy: str | None = None
    monthly_limit: int | None = None  # picodollars; None means no limit

    def can(self, area: str, level: str) -> bool:
        order = {"none": 0, "read": 1, "write": 2}
        return order.get(self.permissions.get(area, "none"), 0) >= order[level]


@dataclass(slots=True)
class Attempt:
    """One try of one upstream target, as kept in the ledger.

    `target` is the configured model name (a policy's target), `model` the upstream model it
    maps to; `latency_ms` is this attempt's own duration; `error` the gateway error class.
    """

    provider: str
    model: str
    status: int
    latency_ms: float
    error: str | None = None
    target: str | None = None

    def to_dict(self) -> dict:
        return {"target": self.target, "provider": self.provider, "model": self.model,
                "status": self.status, "latency_ms": round(self.latency_ms, 3), "error": self.error}
