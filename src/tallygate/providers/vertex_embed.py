"""OpenAI embeddings on Vertex AI's `:predict` for Google's text embedding models (pure, no I/O).

Request: `{"instances": [{"content": <text>}], "parameters": {"outputDimensionality"}}`; up to
250 texts a call for `text-embedding-*` / `text-multilingual-embedding-*`, one a call for
`gemini-embedding-*` (Vertex's limit), the calls made concurrently. Answer: `predictions[i].
embeddings.values`, and the tokens each text was billed for in `embeddings.statistics.
token_count` (a JSON number; an integral float such as `6.0` is read too).
"""

from __future__ import annotations

from tallygate.providers.gemini_embed import output_dimensionality

MAX_TEXTS = 250


def predict_requests(model: str, texts: list[str], dimensions: object) -> list[dict]:
    """The `:predict` bodies for OpenAI's `input` and `dimensions`, in order."""
    parameters = output_dimensionality(texts, dimensions, MAX_TEXTS, "Vertex AI")
    size = 1 if model.startswith("gemini-embedding") else MAX_TEXTS
    return [{"instances": [{"content": t} for t in texts[i:i + size]], **({"parameters": parameters}
                                                                          if parameters else {})}
            for i in range(0, len(texts), size)]


def predicted(answers: list[dict]) -> tuple[list[list[float]], int]:
    """(vectors in order, tokens) of the `:predict` answers; a missing count raises KeyError."""
    vectors: list[list[float]] = []
    count = 0
    for answer in answers:
        for prediction in answer["predictions"]:
            embedding = prediction["embeddings"]
            tokens = embedding["statistics"]["token_count"]
            if not isinstance(tokens, int | float) or isinstance(tokens, bool) or tokens < 0 or tokens != int(tokens):
                raise ValueError("token_count")
            vectors.append(embedding["values"])
            count += int(tokens)
    return vectors, count
