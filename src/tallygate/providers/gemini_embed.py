"""OpenAI embeddings on the Gemini API (`type: gemini`): `batchEmbedContents`, one request per
input text (at most 100), `dimensions` as `outputDimensionality`.

Gemini's embeddings answer documents no token count: the prompt tokens are its `usageMetadata`
when it sends one, else Gemini's own `countTokens` on the same texts (a second call, so the
cost is Google's count, never a guess). Vertex AI's embeddings are `vertex_embed` (`:predict`).
"""

from __future__ import annotations

from tallygate.errors import InvalidRequest, UpstreamProtocolError
from tallygate.providers.bedrock_embed import embedding_texts, openai_embeddings
from tallygate.providers.gemini import GeminiProvider
from tallygate.types import Usage, tokens

MAX_TEXTS = 100


def output_dimensionality(texts: list[str], dimensions: object, max_texts: int, service: str) -> dict:
    """`{"outputDimensionality": n}` for OpenAI's `dimensions` (`{}` without), once `texts` and
    `dimensions` are checked against what Google's `service` takes (a 400 naming the field)."""
    if len(texts) > max_texts:
        raise InvalidRequest(f"{service} embeds at most {max_texts} texts a request", param="input")
    if dimensions is None:
        return {}
    if type(dimensions) is not int or not 0 < dimensions <= 3072:
        raise InvalidRequest(f"must be an integer from 1 to 3072 for {service} embeddings", param="dimensions")
    return {"outputDimensionality": dimensions}


def embed_request(model: str, texts: list[str], dimensions: object) -> dict:
    """The `batchEmbedContents` body for OpenAI's `input` and `dimensions`."""
    extra = output_dimensionality(texts, dimensions, MAX_TEXTS, "Gemini")
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
                         for t in texts]}


class GeminiApiProvider(GeminiProvider):
    """The Gemini API: chat (`GeminiProvider`) and embeddings (`batchEmbedContents`)."""

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        model = body["model"]
        texts = embedding_texts(body, "Gemini models")
        headers = await self._request_headers()
        answer = await self._up.post_json(self._url(model, "batchEmbedContents"),
                                          embed_request(model, texts, body.get("dimensions")), headers)
        try:
            vectors = [e["values"] for e in answer["embeddings"]]
            if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
                raise KeyError("embeddings")
        except (KeyError, TypeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent an embedding we cannot read") from None
        usage = answer.get("usageMetadata")
        count = tokens(usage.get("promptTokenCount")) if isinstance(usage, dict) else 0
        if not count:
            counted = await self._up.post_json(self._url(model, "countTokens"), {
                "contents": [{"role": "user", "parts": [{"text": t}]} for t in texts]}, headers)
            count = tokens(counted.get("totalTokens"))
            if not count:
                raise UpstreamProtocolError(f"provider {self.name!r} sent no token count for the embeddings")
        return openai_embeddings(vectors, model, count, body.get("encoding_format")), Usage(input_tokens=count)
