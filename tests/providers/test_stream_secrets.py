"""A provider secret never reaches a client through a stream, even split across events, and
the stream scrubber holds back no more than a tail that could begin one."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tallygate.providers.secrets import Scrubber

KEY = "sk-upstream-0123456789"
SCRUBBER = Scrubber([KEY, "token-9f8e7d6c5b4a3210ffee"])


def chat_event(text: str, index: int = 0) -> bytes:
    return b'data: {"id":"c","choices":[{"index":%d,"delta":{"content":%s}}]}\n\n' % (index, orjson.dumps(text))


def joined(stream: bytes) -> dict[int, str]:
    """The text a client reassembles, per choice."""
    texts: dict[int, str] = {}
    for event in filter(None, stream.split(b"\n\n")):
        choice = orjson.loads(event[6:])["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["delta"].get("content", "")
    return texts


def relay(batches: list[list[bytes]]) -> tuple[bytes, list[bytes]]:
    """The whole stream a client gets, and what each batch let out."""
    scrub = SCRUBBER.stream()
    sent = [scrub.feed(b"".join(batch)) for batch in batches]
    sent.append(scrub.flush())
    return b"".join(sent), sent


def test_a_secret_split_at_any_point_never_reaches_the_client_whole() -> None:
    text = f"your key is {KEY}, keep it"
    for cut in range(1, len(text)):
        for batched in (False, True):
            events = [chat_event(text[:cut]), chat_event(text[cut:])]
            stream, _ = relay([events] if batched else [[e] for e in events])
            got = joined(stream)[0]
            assert KEY not in got and "[redacted]" in got and got.endswith(", keep it"), (cut, got)
            assert got.startswith("your key is ") and len(got) <= len(text) - len(KEY) + 10 + 3, (cut, got)


def test_a_secret_in_many_pieces_and_interleaved_choices_is_redacted() -> None:
    # A text ending with a secret's first three characters or fewer ("s", "sk-") goes out at
    # once (texts end with "s" all the time); what follows is held, then redacted.
    pieces = ["s", "k-", "upst", "ream-01234", "56789 end"]
    stream, _ = relay([[chat_event(p, 0), chat_event(p, 1)] for p in pieces])
    assert joined(stream) == {0: "s[redacted] end", 1: "s[redacted] end"}
    stream, _ = relay([[chat_event("sk-")], [chat_event(KEY[3:] + " end")]])
    assert joined(stream) == {0: "sk-[redacted] end"}


def test_a_batch_without_a_secrets_first_characters_still_completes_one_begun_before() -> None:
    # The stream scrubber skips its regex for a batch with neither a secret's first four
    # characters nor a text starting with its 2nd, 3rd or 4th: these batches have only the latter.
    for j in range(1, 4):
        stream, sent = relay([[chat_event("key " + KEY[:j])], [chat_event(KEY[j:] + " end")]])
        assert KEY[:4].encode() not in sent[1] and joined(stream) == {0: "key " + KEY[:j] + "[redacted] end"}, j
    stream, _ = relay([[chat_event(c)] for c in KEY[:5]] + [[chat_event(KEY[5:] + " end")]])
    assert joined(stream) == {0: "s[redacted] end"}


def test_only_a_tail_that_could_begin_a_secret_is_held_and_nothing_else_changes() -> None:
    first = chat_event("all of this goes out, but sk-up")
    stream, sent = relay([[first], [chat_event("date is soon")]])
    assert sent[0] == first[:first.index(b"sk-up")]  # held: from the possible beginning on
    assert joined(stream) == {0: "all of this goes out, but sk-update is soon"}  # released unchanged
    plain = [chat_event("nothing secret here"), chat_event(" at all")]
    assert relay([plain])[1][0] == b"".join(plain)  # no tail: out at once, as it came


def test_escapes_before_a_tail_survive_and_json_stays_valid() -> None:
    stream, _ = relay([[chat_event("line\nsk-upstream-")], [chat_event("0123456789\u00e9")]])
    assert joined(stream) == {0: "line\n[redacted]\u00e9"}


def test_a_channel_that_ends_releases_its_held_tail() -> None:
    scrub = SCRUBBER.stream()
    first = scrub.feed(chat_event("ends with s"))
    ended = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    assert first + scrub.feed(ended) == chat_event("ends with s") + ended


@settings(max_examples=300, deadline=None, derandomize=True)
@given(before=st.text("sk-up ream\n\"é\\", max_size=20), after=st.text("sk-up ream\n\"é\\", max_size=20),
       cuts=st.lists(st.integers(0, 80), max_size=8), per=st.integers(1, 4), channels=st.integers(1, 2))
def test_a_secret_never_reaches_the_client_whole_however_the_stream_is_cut(
        before: str, after: str, cuts: list[int], per: int, channels: int) -> None:
    text = before + KEY + after
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    events = [chat_event(p, ch) for p in pieces for ch in range(channels)]
    stream, _ = relay([events[i:i + per] for i in range(0, len(events), per)])
    for ch, got in joined(stream).items():  # every event still parses, and no channel has the key
        assert KEY not in got and "[redacted]" in got, (ch, pieces, got)
        assert got.endswith(after), (got, after)  # what follows the secret is untouched
