"""An in-process provider for demos and benchmarks: deterministic text, realistic usage, and a 400
naming the field for what OpenAI would refuse (`mock_checks.py`)."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncGenerator

from tallygate.providers.http import HttpClient
from tallygate.providers.mock_checks import check_chat, check_embeddings
from tallygate.settings import ProviderConfig
from tallygate.types import Reported, Usage

REPLY = ("Hello from Tallygate's mock provider. This reply is deterministic, its usage is "
         "realistic, and every call is metered, priced and written to the ledger.")
_PIECES = [w if i == 0 else " " + w for i, w in enumerate(REPLY.split(" "))]


def _prompt_tokens(body: dict) -> int:
    """About four characters a token, plus a little per message, like real tokenizers."""
    chars = 0
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(text) for p in content if isinstance(p, dict) and isinstance(text := p.get("text"), str))
        chars += 16
    return max(1, chars // 4)


def _cap(body: dict) -> int:
    """The output cap the body sets (`max_completion_tokens` or `max_tokens`: the tighter), else
    the whole reply; a provider never answers past it, and the gateway reserves up to it."""
    caps = [v for k in ("max_completion_tokens", "max_tokens") if type(v := body.get(k)) is int and v > 0]
    return min([len(_PIECES), *caps])


def _finish(cap: int) -> str:
    return "stop" if cap == len(_PIECES) else "length"


class MockProvider:
    """Answers every completion with the same text after `latency_ms`."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient | None = None) -> None:
        self.name = name
        self._delay = cfg.latency_ms / 1000.0

    def _usage(self, body: dict) -> Usage:
        return Usage(input_tokens=_prompt_tokens(body), output_tokens=_cap(body))

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        check_chat(body)
        if self._delay:
            await asyncio.sleep(self._delay)
        usage, cap = self._usage(body), _cap(body)
        return {
            "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_tallygate_mock",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": _finish(cap),
                         "message": {"role": "assistant", "content": "".join(_PIECES[:cap]), "refusal": None}}],
            "usage": usage.to_openai(),
        }, usage

    async def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        check_chat(body)
        if self._delay:
            await asyncio.sleep(self._delay)
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_tallygate_mock"}
        yield [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": None, "finish_reason": None}]}]
        cap = _cap(body)
        yield [{**base, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                     "finish_reason": None}]} for piece in _PIECES[:cap]]
        yield [{**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish(cap)}]},
               {**base, "choices": [], "usage": self._usage(body).to_openai()}]

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        check_embeddings(body)
        if self._delay:
            await asyncio.sleep(self._delay)
        inputs = body.get("input")
        # one string, or one array of token ids, is one input (one vector), as OpenAI answers it
        one = isinstance(inputs, str) or (isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], int))
        items = [inputs] if one else list(inputs or [])
        tokens = sum(len(x) if isinstance(x, list) else max(1, len(str(x)) // 4)
                     for x in items)  # a token id is a token, whatever its digits
        data = [{"object": "embedding", "index": i,
                 "embedding": [((zlib.crc32(str(x).encode()) >> k) % 1000) / 1000.0 for k in range(8)]}
                for i, x in enumerate(items)]
        usage = Usage(input_tokens=tokens)
        return {"object": "list", "data": data, "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, usage

    async def close(self) -> None:
        return None
