"""The fake Azure OpenAI resource answers openai's own `AzureOpenAI` client, in both URL styles."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.azure import KEY, FakeAzure


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure() as fake:
        yield fake


@pytest.mark.parametrize("api_version", ["2024-10-21", None])
def test_azure_client_chat_embeddings_and_responses(azure: FakeAzure, api_version: str | None) -> None:
    if api_version:
        client = openai.AzureOpenAI(azure_endpoint=azure.root_url, api_key=KEY, api_version=api_version,
                                    max_retries=0)
    else:  # the v1 API: the plain client on {endpoint}/openai/v1/ with the api-key header
        client = openai.OpenAI(base_url=azure.root_url + "/openai/v1/", api_key="unused",
                               default_headers={"api-key": KEY}, max_retries=0)
    azure.clear()
    chat = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content and chat.usage and chat.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    emb = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert emb.data[0].embedding
    resp = client.responses.create(model="gpt-4o", input="hi")
    assert resp.output_text
    paths = [r["path"] for r in azure.requests]
    if api_version:
        assert paths == ["/openai/deployments/gpt-4o/chat/completions"] * 2 + [
            "/openai/deployments/text-embedding-3-small/embeddings", "/openai/responses"]
        assert all(r["query"]["api-version"] == api_version for r in azure.requests)
    else:
        assert paths == ["/openai/v1/chat/completions"] * 2 + ["/openai/v1/embeddings", "/openai/v1/responses"]


def test_wrong_key_and_missing_api_version_answer_as_azure(azure: FakeAzure) -> None:
    bad = openai.AzureOpenAI(azure_endpoint=azure.root_url, api_key="wrong", api_version="2024-10-21",
                             max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Access denied"):
        bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    plain = openai.OpenAI(base_url=azure.root_url + "/openai/deployments/gpt-4o", api_key="x",
                          default_headers={"api-key": KEY}, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="Resource not found"):
        plain.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
