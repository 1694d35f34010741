#!/usr/bin/env python3
"""CPU the stream relay spends keeping provider secrets from clients, per relayed event:
per-event scrubbing (`Scrubber.body`, as before) against the stream scrubber that also
catches secrets split across events (`Scrubber.stream()`), on chat, Messages and Responses
events as the relay sends them, one event per batch (a slow provider) and 16 per batch.

    .venv/bin/python bench/stream_scrub.py [--events 200000]

Bounded (a few seconds), in-process, CPU time (`time.process_time`): noisy on a shared machine,
so each figure is the best of 5 runs. Three realistic secrets are configured (OpenAI-, Anthropic-
and header-shaped); the text is English words, many of which end in a secret's first letter
("s"), the case where the new scrubber holds a tail back.
"""
import argparse
import secrets
import time

import orjson

from tallygate.providers.secrets import Scrubber

WORDS = ("the gateway relays streams to its clients as tokens arrive and keeps secrets out of "
         "every event it sends so keys stay safe sometimes words end with s or k like tasks").split()
KEYS = ["sk-proj-" + secrets.token_urlsafe(36), "sk-ant-api03-" + secrets.token_urlsafe(60),
        "hdr-" + secrets.token_urlsafe(24)]


def chat(word: str) -> bytes:
    return (b'data: {"id":"req_0195f3a9c2e1a7b3c4d5e6f7a8","object":"chat.completion.chunk","created":1733450000,'
            b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":%s},"logprobs":null,'
            b'"finish_reason":null}]}\n\n' % orjson.dumps(" " + word))


def messages(word: str) -> bytes:
    return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":%s}}\n\n' % orjson.dumps(" " + word))


def responses(word: str) -> bytes:
    return (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":7,'
            b'"item_id":"msg_0195f3a9","output_index":0,"content_index":0,"delta":%s}\n\n' % orjson.dumps(" " + word))


def run(scrubber: Scrubber, batches: list[bytes], new: bool) -> float:
    """CPU microseconds per batch to scrub `batches` as one stream."""
    start = time.process_time()
    if new:
        scrub = scrubber.stream()
        for batch in batches:
            scrub.feed(batch)
        scrub.flush()
    else:
        for batch in batches:
            scrubber.body(batch)
    return (time.process_time() - start) / len(batches) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    scrubber = Scrubber(KEYS)
    print(f"{'stream':<10} {'events/batch':>12} {'before us/batch':>16} {'after us/batch':>15} {'after us/event':>15}")
    for name, make in (("chat", chat), ("messages", messages), ("responses", responses)):
        events = [make(WORDS[i % len(WORDS)]) for i in range(args.events)]
        for per in (1, 16):
            batches = [b"".join(events[i:i + per]) for i in range(0, len(events), per)]
            before = min(run(scrubber, batches, False) for _ in range(5))
            after = min(run(scrubber, batches, True) for _ in range(5))
            print(f"{name:<10} {per:>12} {before:>16.2f} {after:>15.2f} {after / per:>15.2f}")


if __name__ == "__main__":
    main()
