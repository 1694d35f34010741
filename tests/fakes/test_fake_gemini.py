"""The fake Gemini API answers Google's own `google-genai` client pointed at its base URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.gemini import CACHED_TOKENS, KEY, THOUGHT_TOKENS, FakeGemini


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


def client(fake: FakeGemini, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=fake.root_url))


def test_generate_content_json_and_stream_agree(gemini: FakeGemini) -> None:
    c = client(gemini)
    config = types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=100,
                                         thinking_config=types.ThinkingConfig(thinking_budget=512))
    whole = c.models.generate_content(model="gemini-2.5-flash", contents="hello gemini", config=config)
    assert whole.text == "Echo: hello gemini"
    assert whole.usage_metadata is not None and whole.usage_metadata.thoughts_token_count == THOUGHT_TOKENS
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents="hello gemini", config=config))
    assert "".join(ch.text or "" for ch in chunks) == whole.text
    assert chunks[-1].usage_metadata == whole.usage_metadata
    assert gemini.requests[-1]["query"] == {"alt": "sse"}


def test_function_calls_images_and_cached_content(gemini: FakeGemini) -> None:
    c = client(gemini)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="search", description="Search", parameters_json_schema={"type": "object"})])
    image = types.Part.from_bytes(data=b"\x89PNG fake", mime_type="image/png")
    config = types.GenerateContentConfig(tools=[tool], cached_content="cachedContents/abc")
    resp = c.models.generate_content(model="gemini-2.5-flash", contents=["what is this", image], config=config)
    assert resp.function_calls and resp.function_calls[0].name == "search"
    assert resp.usage_metadata is not None and resp.usage_metadata.cached_content_token_count == CACHED_TOKENS


def test_bad_key_and_failures_are_googles_errors(gemini: FakeGemini) -> None:
    wrong, right = client(gemini, "wrong"), client(gemini)  # kept: a dropped Client closes its connections
    with pytest.raises(errors.ClientError) as bad:
        wrong.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert bad.value.code == 400 and "API key not valid" in str(bad.value)
    with pytest.raises(errors.ClientError) as throttled:
        right.models.generate_content(model="fail-429", contents="hi")
    assert throttled.value.code == 429 and throttled.value.status == "RESOURCE_EXHAUSTED"


def test_embeddings_and_token_counts_answer_google_genai(gemini: FakeGemini) -> None:
    c = client(gemini)
    answer = c.models.embed_content(model="gemini-embedding-001", contents=["hello there", "bye"],
                                    config=types.EmbedContentConfig(output_dimensionality=8))
    assert answer.embeddings is not None and [len(e.values or []) for e in answer.embeddings] == [8, 8]
    sent = gemini.requests[-1]
    assert sent["path"].endswith("/models/gemini-embedding-001:batchEmbedContents")  # the SDK says v1
    assert sent["body"]["requests"][0]["content"]["parts"] == [{"text": "hello there"}]
    counted = c.models.count_tokens(model="gemini-embedding-001", contents=["hello there", "bye"])
    assert counted.total_tokens == len("hello there") // 4 + 1
