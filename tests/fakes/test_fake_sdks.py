"""The official OpenAI and Anthropic SDKs pointed straight at the fake upstream, prompt caching included."""
from __future__ import annotations

import anthropic
import openai
import pytest

from .raw_client import AN_MSGS, MSGS
from .upstream import FakeUpstream


def test_openai_sdk(up):
    with openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as client:
        r = client.chat.completions.create(model="cached-3", messages=MSGS)
        assert r.choices[0].message.content.startswith("Echo: What is")
        assert r.usage.prompt_tokens_details.cached_tokens == 3
        stream = client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[-1].usage.total_tokens == r.usage.total_tokens - 3
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            r.choices[0].message.content
        emb = client.embeddings.create(model="text-embedding-3-small", input="hello")  # base64
        assert len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens == 1
        assert [m.id for m in client.models.list()][0] == "gpt-4o-mini"
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model="fail-429", messages=MSGS)
        assert ei.value.response.headers["retry-after"] == "2"
        with pytest.raises(openai.BadRequestError, match="request_tags"):
            client.chat.completions.create(model="m", messages=MSGS, extra_body={"request_tags": []})
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="reset", messages=MSGS)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="stream-error", messages=MSGS, stream=True))
    assert len(up.requests) == 8


def test_anthropic_sdk():
    # anthropic SDK >= 2 sends the key as "Authorization: Bearer"; older ones as x-api-key
    with FakeUpstream(anthropic_bearer_ok=True) as up, \
            anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0) as client:
        r = client.messages.create(model="cached-11", max_tokens=50,
                                   messages=[{"role": "user", "content": "hi there"}])
        assert r.content[0].text == "Echo: hi there" and r.usage.cache_read_input_tokens == 11
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                                    messages=[{"role": "user", "content": "hi there"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "Echo: hi there" and final.usage.output_tokens == 3
        assert final.usage.input_tokens == 2
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model="fail-529", max_tokens=5, messages=AN_MSGS)
        with pytest.raises(anthropic.APIStatusError):  # in-band error event mid-stream
            list(client.messages.create(model="stream-error", max_tokens=5, messages=AN_MSGS,
                                        stream=True))
        assert up.requests[0]["headers"]["anthropic-version"]


def test_prompt_caching_emulated_as_the_sdks_read_it():
    """With `prompt_caching`: OpenAI's automatic caching (earlier messages from 1,024 tokens, in
    steps of 128, read the second time; Responses too) and Anthropic's breakpoints (written, then
    read; the rest in input_tokens); DeepSeek's documented usage fields for deepseek-* models."""
    rules = "Follow the house rules. " * 200  # 4,800 characters: 1,200 tokens
    n = len(rules) // 4 // 128 * 128
    with FakeUpstream(anthropic_bearer_ok=True) as up, \
            openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as client, \
            anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0) as claude:
        up.prompt_caching = True
        ask = [{"role": "system", "content": rules}, {"role": "user", "content": "hi"}]
        first, second = (client.chat.completions.create(model="gpt-4o", messages=ask) for _ in range(2))
        assert first.usage.prompt_tokens == second.usage.prompt_tokens == (len(rules) + 2) // 4
        assert (first.usage.prompt_tokens_details.cached_tokens, second.usage.prompt_tokens_details.cached_tokens) \
            == (0, n)
        assert client.chat.completions.create(model="gpt-4o", messages=ask[1:]).usage.prompt_tokens_details \
            .cached_tokens == 0  # a short prompt is never cached
        responses = [client.responses.create(model="gpt-4o", instructions=rules + "!", input="hi") for _ in range(2)]
        assert [r.usage.input_tokens_details.cached_tokens for r in responses] == [0, n]
        deepseek = client.chat.completions.create(model="deepseek-chat", messages=ask)  # `rules` seen: a hit
        assert deepseek.usage.prompt_tokens_details is None
        assert deepseek.usage.model_extra["prompt_cache_hit_tokens"] == n
        assert deepseek.usage.model_extra["prompt_cache_miss_tokens"] == deepseek.usage.prompt_tokens - n
        system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        written, read = (claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, system=system,
                                                messages=[{"role": "user", "content": "hi"}]) for _ in range(2))
    m = len(rules) // 4
    assert (written.usage.cache_creation_input_tokens, written.usage.cache_read_input_tokens) == (m, 0)
    assert written.usage.cache_creation.ephemeral_1h_input_tokens == m
    assert (read.usage.cache_creation_input_tokens, read.usage.cache_read_input_tokens) == (0, m)
    assert written.usage.input_tokens == read.usage.input_tokens == (len(rules) + 2) // 4 - m
