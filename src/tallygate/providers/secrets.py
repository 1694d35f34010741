"""Provider secrets never reach a client: scrubbing by value, not only by pattern.

`Scrubber.from_config(config)` collects every configured provider credential (`api_key`, and
every extra header value: both already resolved from their `env:` variables) and every
upstream address (`base_url`, its host and host:port). `text()` removes them, anything shaped
like a credential (`errors.redact`) and any URL from text relayed from a provider (error
messages); `body()` removes the credentials from response bytes (success bodies and stream
events). Provider response headers are never relayed (only a parsed `retry-after`). Values shorter
than `MIN_SECRET` characters are not scrubbed by value (they would mangle ordinary text; they
are not secrets worth the name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson

from tallygate.errors import redact
from tallygate.settings import GatewayConfig

MIN_SECRET = 8
REDACTED = "[redacted]"
_URL = re.compile(r"(?i)\b(?:https?|wss?)://[^\s\"'<>]+")


class Scrubber:
    """Removes known secret values (longest first) and URLs from relayed text and bytes."""

    def __init__(self, secrets: Iterable[str], addresses: Iterable[str] = ()) -> None:
        secret_set = {v for v in secrets if v and len(v) >= MIN_SECRET}
        self._secrets = sorted(secret_set, key=len, reverse=True)
        self._bsecrets = [v.encode() for v in self._secrets]
        self._text_values = sorted(secret_set | {a for a in addresses if a and len(a) >= MIN_SECRET},
                                   key=len, reverse=True)
        self._streams = StreamScrubber(self, self._secrets)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Scrubber:
        secrets: list[str] = []
        addresses: list[str] = []
        for provider in config.providers.values():
            if provider.api_key:
                secrets.append(provider.api_key)
            secrets.extend(provider.headers.values())
            if provider.base_url:
                parts = urlsplit(provider.base_url)
                addresses += [provider.base_url.rstrip("/"), parts.netloc, parts.hostname or ""]
        return cls(secrets, addresses)

    def text(self, text: str) -> str:
        """`text` (relayed from a provider) without secrets, upstream addresses, credential-like
        strings or URLs."""
        for value in self._text_values:
            if value in text:
                text = text.replace(value, REDACTED)
        return redact(_URL.sub("[url]", text)).replace("\x00", "\ufffd")

    def stream(self) -> StreamScrub:
        """A scrubber for one relayed stream, which also catches a secret split across events."""
        return self._streams.stream()

    def body(self, data: bytes) -> bytes:
        """`data` without the configured secrets (one substring search each; addresses stay:
        a model may rightly mention a public host)."""
        for value in self._bsecrets:
            if value in data:
                data = data.replace(value, b"[redacted]")
        return data



# The JSON string fields whose text a client joins across stream events: chat deltas' content,
# reasoning, refusal and tool arguments; Anthropic's text, thinking and partial_json deltas;
# the Responses API's delta events.
_TEXT_FIELDS = (b"content", b"text", b"delta", b"partial_json", b"thinking", b"arguments", b"reasoning_content",
                b"refusal", b"reasoning")
_FIELD = rb'"(?:' + b"|".join(_TEXT_FIELDS) + rb')":"'
_UNIT = rb'(?:\\u[0-9a-fA-F]{4}|\\.|[^"\\])'  # one character of a JSON string, an escape whole
_STRING = re.compile(_FIELD + rb"(" + _UNIT + rb'*)"')
# The same fields found from the `":"` that ends their name: the regex engine scans for a
# literal prefix far faster than it tries an alternation at every quote.
_FIELD_AT = rb'":"(?:' + b"|".join(rb'(?<="%s":")' % name for name in _TEXT_FIELDS) + b")"
_INDEX = re.compile(rb'index":(\d+)')
MAX_HELD = 64 * 1024  # bytes held for a channel that never continues, before they are let go
# A text ending with the first SHOWN_MAX characters of a secret or fewer is not held back (they
# are most often a key's public format, like `sk-`, and texts end with "s" all the time); if
# the secret goes on in the channel's next texts, from there on it is held, then redacted.
SHOWN_MAX = 3

Channel = bytes | None
Spans = list[tuple[int, int]]  # (position, length) of a held tail's pieces in the stream buffer


def _prefixes(secret: bytes) -> bytes:
    """A regex of any non-empty proper prefix of `secret`: a(?:b(?:c)?)? for abcd."""
    out = b""
    for byte in reversed(secret[:-1]):
        out = re.escape(bytes([byte])) + (b"(?:" + out + b")?" if out else b"")
    return out or b"(?!)"


def _channel(buf: bytes, start: int, end: int) -> Channel:
    """The last `index` (choice, content block, tool call, output item) in `buf[start:end]`."""
    last = None
    for m in _INDEX.finditer(buf, start, end):
        last = m.group(1)
    return last


def _last(spans: Spans, size: int) -> Spans:
    """The pieces of the last `size` bytes of a tail."""
    out: Spans = []
    for pos, length in reversed(spans):
        if size <= 0:
            break
        take = min(length, size)
        out.append((pos + length - take, take))
        size -= take
    return out[::-1]


class StreamScrubber:
    """What `Scrubber.stream()` makes each stream from: the secrets in their JSON form, what
    is left of each after its first characters, and the patterns that find a text ending
    with what could begin one (a held tail) or starting with what could end one."""

    def __init__(self, scrubber: Scrubber, secrets: list[str]) -> None:
        self.scrubber = scrubber
        escaped = [orjson.dumps(v)[1:-1] for v in secrets]
        whole = [v for v in escaped if b"\\" not in v and len(v) > SHOWN_MAX + 1]  # escaped ones: per event
        # A secret split after its first j < SHOWN_MAX + 1 characters is caught by its rest, S[j:].
        self.rests = [v[j:] for v in whole for j in range(SHOWN_MAX + 1)]
        longs = b"|".join(re.escape(v[:SHOWN_MAX + 1]) + b"(?:" + _prefixes(v[SHOWN_MAX + 1:]) + b")?" for v in whole)
        pieces = b"|".join(_prefixes(v[j:]) for v in whole for j in range(1, SHOWN_MAX + 1))
        tail = b"(?:" + _UNIT + b"*?(" + longs + b")|(" + pieces + b"))"
        starts = b"|".join(re.escape(r) for r in self.rests if r not in whole)
        # One pass finds a text starting with a secret's rest or ending with its beginning.
        self.candidates = re.compile(_FIELD_AT + b"(?:" + starts + b"|" + tail + b'")') if whole else None
        self.tail = re.compile(tail + rb"\Z") if whole else None
        # What every `candidates` match needs, found far faster than the match itself: a text
        # starting with a secret's rest or with a piece after its first characters starts with
        # one of its 2nd to SHOWN_MAX + 1-th characters, and a tail that could begin a secret
        # holds its first SHOWN_MAX + 1 characters. A batch with neither cannot match.
        self.heads = sorted({v[:SHOWN_MAX + 1] for v in whole})
        seconds = sorted({v[j:j + 1] for v in whole for j in range(1, SHOWN_MAX + 1)})
        self.starts = re.compile(rb'":"(?:' + b"|".join(map(re.escape, seconds)) + b")") if whole else None

    def stream(self) -> StreamScrub:
        return StreamScrub(self)


class StreamScrub:
    """Scrubs one relayed stream, secrets split across events included.

    A client joins the text of consecutive events of one channel (a choice, a content block, a
    tool call: the last `index` before the text in its event), so a secret may arrive in pieces
    no single event holds. When a text ends with what could be the start of a secret (more than
    its first `SHOWN_MAX` characters, or a whole text that goes on from them), that minimal tail
    (and what follows it) is held back until the channel's next event shows whether the secret
    completes: if it does, the held part is cut and the rest replaced by `[redacted]`; if not,
    the held bytes go out unchanged. A batch with no such text passes through as it is (one
    regex search, no copy).
    """

    __slots__ = ("_s", "_held", "_tails", "_edits")

    def __init__(self, scrubber: StreamScrubber) -> None:
        self._s = scrubber
        self._held = b""
        self._tails: dict[Channel, tuple[Spans, bytes]] = {}  # channel -> (pieces, tail text)
        self._edits: list[tuple[int, int, bytes]] = []

    def feed(self, data: bytes) -> bytes:
        """The bytes (of what was held, then `data`) that may go to the client now."""
        data = self._s.scrubber.body(data)
        if not self._tails and self._next(data, 0) is None:
            return data  # the usual case: no text that could begin or end a secret
        buf = self._apply(self._scan(self._held + data, len(self._held)))
        hold = min((spans[0][0] for spans, _ in self._tails.values() if spans), default=len(buf))
        if len(buf) - hold > MAX_HELD:
            self._tails.clear()
            hold = len(buf)
        self._held = buf[hold:]
        self._tails = {ch: ([(p - hold, n) for p, n in spans], text) for ch, (spans, text) in self._tails.items()}
        return buf[:hold]

    def flush(self) -> bytes:
        """What is still held, as it is: the stream ends, no continuation can come."""
        held, self._held = self._held, b""
        self._tails.clear()
        return held

    def _next(self, buf: bytes, pos: int) -> int | None:
        """Where the first text from `pos` that could begin or end a secret is, if any."""
        s = self._s
        if s.starts is None or (s.starts.search(buf, pos) is None and all(buf.find(h, pos) < 0 for h in s.heads)):
            return None  # none of what a candidate needs is there (usually): no regex walk of the batch
        m = s.candidates.search(buf, pos) if s.candidates is not None else None
        return None if m is None else m.start()

    def _scan(self, buf: bytes, pos: int) -> bytes:
        """Walk the events from `pos`: settle or extend held tails, hold new ones (edits are
        collected in `_edits`, positions in `buf`)."""
        while pos < len(buf):
            if not self._tails:
                at = self._next(buf, pos)
                if at is None:
                    break
                pos = max(pos, buf.rfind(b"\n\n", pos, at) + 2)
            end = buf.find(b"\n\n", pos)
            end = len(buf) if end < 0 else end
            touched = set()
            for m in _STRING.finditer(buf, pos, end):
                channel = _channel(buf, pos, m.start())
                touched.add(channel)
                self._text(buf, channel, *m.span(1))
            channel = _channel(buf, pos, end)
            if channel not in touched:  # the channel's event without text: its text ended
                self._tails.pop(channel, None)
            pos = end + 2
        return buf

    def _text(self, buf: bytes, channel: Channel, s: int, e: int) -> None:
        """One text `buf[s:e]` of `channel`: a held tail completed into a secret (cut, and the
        rest redacted), a tail still growing, or this text's own tail held."""
        spans, tail = self._tails.pop(channel, ([], b""))
        text = buf[s:e]
        rests = self._s.rests
        if not tail:  # the rest of a secret whose first characters went out unheld
            ending = next((v for v in rests if text.startswith(v)), None)
            if ending is not None:
                self._edits.append((s, s + len(ending), REDACTED.encode()))
                return self._own_tail(buf, channel, s + len(ending), e)
        for i in range(len(tail)):
            joined = tail[i:] + text
            secret = next((v for v in rests if joined.startswith(v)), None)
            if secret is not None:
                rest = len(secret) - (len(tail) - i)
                self._edits += [(p, p + n, b"") for p, n in _last(spans, len(tail) - i)]
                self._edits.append((s, s + rest, REDACTED.encode()))
                return self._own_tail(buf, channel, s + rest, e)
        for i in range(len(tail)):
            joined = tail[i:] + text
            if any(v.startswith(joined) for v in rests):
                pieces = _last(spans, len(tail) - i) + ([(s, e - s)] if e > s else [])
                self._tails[channel] = (pieces, joined)
                return None
        return self._own_tail(buf, channel, s, e)

    def _own_tail(self, buf: bytes, channel: Channel, s: int, e: int) -> None:
        tail = self._s.tail
        assert tail is not None
        m = tail.match(buf, s, e)
        if m is not None:
            group = 1 if m.group(1) is not None else 2  # a secret's beginning, or a piece after it
            self._tails[channel] = ([(m.start(group), e - m.start(group))], m.group(group))

    def _apply(self, buf: bytes) -> bytes:
        """`buf` with the collected edits made, and the held tails' positions moved along."""
        if not self._edits:
            return buf
        edits, self._edits = sorted(self._edits), []
        out, at = [], 0
        for start, end, new in edits:
            out += [buf[at:start], new]
            at = end
        out.append(buf[at:])

        def moved(pos: int) -> int:
            return pos + sum(len(new) - (end - start) for start, end, new in edits if end <= pos)

        self._tails = {ch: ([(moved(p), n) for p, n in spans], text) for ch, (spans, text) in self._tails.items()}
        return b"".join(out)
