"""Where each part of a translated chat request came from, so that a 400 names the client's field.

`/v1/messages` and `/v1/responses` served through chat are translated twice: to a chat request
(`messages_translate`, `responses_translate`), then by the provider to its own API. A provider's
refusal names the chat field (`messages[2].content[0].image_url.url`, `response_format`), which
the client never sent: the chat messages are numbered differently (the system prompt is one, a
user turn's tool results are several) and the fields are named differently. The translators
record here, for each chat message, content part and tool call, the path it was made from, and
`renamed` turns the provider's error into one naming that path.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

from tallygate.errors import InvalidRequest

_PATH = re.compile(r"messages\[(\d+)\](?:\.(content|tool_calls)\[(\d+)\])?(.*)", re.S)
_NAME = re.compile(r"[^.\[]*")


class ParamOrigins:
    """The inbound paths of one translated chat request's messages, parts and tool calls.

    `top` maps a chat top-level field (or a path within it) to the inbound one (`response_format`
    -> `text.format`); `fields` a message's field (`.tool_call_id` -> `.call_id`); `parts` a
    content part's (`.image_url.url` -> `.source`), `.type` is `.type` everywhere."""

    def __init__(self, top: dict[str, str], fields: dict[str, str], parts: dict[str, str]) -> None:
        self.top, self.fields, self.parts = top, fields, {".type": ".type", **parts}
        self._messages: list[str] = []
        self._inner: dict[tuple[int, str, int], str] = {}

    def message(self, path: str) -> int:
        """Record that the next chat message comes from `path`; its index."""
        self._messages.append(path)
        return len(self._messages) - 1

    def last(self) -> int:
        """The index of the last chat message recorded."""
        return len(self._messages) - 1

    def inner(self, index: int, field: str, at: int, path: str) -> None:
        """Record that chat message `index`'s `field[at]` (content part, tool call) comes from `path`."""
        self._inner[(index, field, at)] = path

    def param(self, chat_param: str) -> str | None:
        """The inbound path of `chat_param`, or None when it was not recorded."""
        m = _PATH.fullmatch(chat_param)
        if m is None:  # a top-level field, or one inside it (named as a whole: `tools[2]` -> `tools`)
            return self.top.get(chat_param, self.top.get(_NAME.match(chat_param)[0]))  # type: ignore[index]
        i, field, at, rest = int(m[1]), m[2], m[3], m[4]
        if field is not None:
            inner = self._inner.get((i, field, int(at)))
            return None if inner is None else inner + self.parts.get(rest, "")
        if i >= len(self._messages):
            return None
        return self._messages[i] + self.fields.get(rest, rest)

    def renamed(self, err: InvalidRequest) -> InvalidRequest:
        """`err` naming the inbound field instead of the chat one (as it is when not recorded)."""
        if err.param is None or (param := self.param(err.param)) is None or param == err.param:
            return err
        return InvalidRequest(err.message.replace(err.param, param, 1), param=param, code=err.code)

    @contextmanager
    def naming(self) -> Iterator[None]:
        """Within: an InvalidRequest is renamed (`renamed`)."""
        try:
            yield
        except InvalidRequest as err:
            raise self.renamed(err) from err.__cause__

    async def stream(self, chunks: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """`chunks`, its InvalidRequest renamed (`renamed`)."""
        try:
            with self.naming():
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()
