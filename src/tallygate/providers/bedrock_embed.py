"""OpenAI embeddings on Bedrock's InvokeModel: Amazon Titan Text Embeddings (v2) and Cohere Embed.

Pure translation, no I/O. Titan takes one text a call (`{"inputText", "dimensions", "normalize"}`,
answering `{"embedding", "inputTextTokenCount"}`), so a list input is one call per text; Cohere
takes up to 96 texts (`{"texts", "input_type", "embedding_types"}`, answering `{"embeddings"}`,
its token count in the `X-Amzn-Bedrock-Input-Token-Count` header). The family is chosen by the
model id (`amazon.titan-embed-text-…`, `cohere.embed-…`, cross-region profiles too).
"""

from __future__ import annotations

import array
import base64
import sys

from tallygate.errors import InvalidRequest

COHERE_MAX_TEXTS = 96
_TITAN_DIMENSIONS = (256, 512, 1024)


def embedding_family(model: str) -> str:
    """`titan` or `cohere`, or a 400 naming `model`."""
    if "titan-embed-text" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    raise InvalidRequest(f"the Bedrock model {model!r} is not an embeddings model this gateway speaks "
                         "(Amazon Titan Text Embeddings, Cohere Embed)", param="model")


def embedding_texts(body: dict, models: str = "Bedrock models") -> list[str]:
    """The texts of an OpenAI embeddings request (token arrays are refused: the provider takes text)."""
    inp = body.get("input")
    texts = [inp] if isinstance(inp, str) else inp
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise InvalidRequest(f"must be a non-empty string or array of non-empty strings for {models}",
                             param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest("must be float or base64", param="encoding_format")
    return texts


def titan_body(text: str, dimensions: object) -> dict:
    out: dict = {"inputText": text, "normalize": True}
    if dimensions is not None:
        if dimensions not in _TITAN_DIMENSIONS or isinstance(dimensions, bool):
            raise InvalidRequest("must be 256, 512 or 1024 for Titan Text Embeddings", param="dimensions")
        out["dimensions"] = dimensions
    return out


def cohere_body(texts: list[str], dimensions: object) -> dict:
    if len(texts) > COHERE_MAX_TEXTS:
        raise InvalidRequest(f"Cohere Embed takes at most {COHERE_MAX_TEXTS} texts", param="input")
    if dimensions is not None:
        raise InvalidRequest("is not supported for Cohere Embed v3", param="dimensions")
    return {"texts": texts, "input_type": "search_document", "embedding_types": ["float"]}


def cohere_vectors(answer: dict) -> list:
    """Cohere's vectors: `embeddings` is a list, or by type (`{"float": [...]}`)."""
    vectors = answer.get("embeddings")
    if isinstance(vectors, dict):
        vectors = vectors.get("float")
    if not isinstance(vectors, list):
        raise KeyError("embeddings")
    return vectors


def openai_embeddings(vectors: list, model: str, tokens: int, encoding: object = None) -> dict:
    """OpenAI's embeddings answer; `base64` (what the openai SDK asks for) is OpenAI's encoding,
    little-endian float32s."""
    if encoding == "base64":
        vectors = [_base64(v) for v in vectors]
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _base64(vector: list) -> str:
    floats = array.array("f", vector)
    if sys.byteorder != "little":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode()
