"""Hostile JSON for the fuzz tests: values of every type and shape an adversary sends, and
bodies that are valid but for one or two values replaced by such, at any depth."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

# Hostile values: every JSON type, NUL and controls, lone surrogates (json.dumps escapes them),
# numbers past 64 bits, deep and wide structures.
hostile_text = st.one_of(
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x\udfff", "\x1b[31m", "\u202e", "9" * 30, "-1", "1e400",
                     "text", "image", "tool_use", "tool_result", "function", "input_text", "user", "assistant"]),
    st.text(st.characters(exclude_categories=()), max_size=20))
huge = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 1e308, -1e308, 5e-324, 0, -1])
scalar = st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=False, allow_infinity=False) \
    | hostile_text | huge
hostile = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner,
                                                                                           max_size=3),
                       max_leaves=12)


def paths_of(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into `value` (object keys and array indices), the root's children first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from paths_of(v, (*prefix, i))


def replace_at(body: dict, path: tuple, value: Any) -> dict:
    """A deep copy of `body` with the value at `path` replaced."""
    out = copy.deepcopy(body)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def mutated(base: dict, models: list[str] | None = None) -> st.SearchStrategy[dict]:
    """`base` (on one of `models`, streamed or not, when given) with one or two values, at any
    path or as a stray top-level field, replaced by hostile ones."""
    paths = [p for p in paths_of(base) if models is None or p != ("model",)] + [("stray",)]

    def build(model: str | None, stream: bool, changes: list[tuple[tuple, Any]]) -> dict:
        body = dict(base) if model is None else {**base, "model": model}
        if "stream" in base:
            body["stream"] = stream
            if not stream:  # OpenAI refuses stream_options without a stream
                body.pop("stream_options", None)
        for path, value in changes:
            try:
                body = replace_at(body, path, value)
            except (KeyError, IndexError, TypeError):  # an earlier change replaced a parent
                pass
        return body

    change = st.tuples(st.sampled_from(paths), hostile)
    model = st.just(None) if models is None else st.sampled_from(models)
    return st.builds(build, model, st.booleans(), st.lists(change, min_size=1, max_size=2))
