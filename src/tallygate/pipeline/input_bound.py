"""Inputs a limited request's reservation cannot bound, refused before any provider is called.

A limited request reserves its prompt at a token per UTF-8 byte of its body (every tokenizer
spends at least a byte a token) and each image at the most its targets bill for one
(`budget.prompt_bound`). Some parts are billed by what they hold, not by their bytes, so no
reservation made from the body can bound them:

- documents and files (chat `file`, Responses `input_file`, Messages `document` other than a
  `text` or `content` source), inline or by reference: a PDF is billed per page, its text and an
  image of each page; a few kilobytes of compressed PDF hold hundreds of pages, and a file id or
  URL holds anything.
- audio input (chat `input_audio`): billed at audio token prices the gateway does not meter;
  likewise a chat assistant turn's stored audio answer (`"audio": {"id": ...}`), which OpenAI
  puts back in the prompt whatever its length.
- an image part whose data is not an image (`data:video/mp4;base64,...` in `image_url`, a
  Messages image of media type `application/pdf`): Gemini takes any media type inline and bills
  a video per second, far past the bound of one image.
- Responses `item_reference` items (or an item given only by its `id`): stored items the
  gateway never sees, like `previous_response_id` (`output_cap`); likewise Gemini's
  `cached_content` (a `cachedContents/...` name: a context cache of up to a million tokens the
  request reads, and whose size may move it to a long-prompt price tier).

- Azure OpenAI's "On Your Data" (`data_sources` on chat): documents retrieved from the client's
  search index and put in the prompt at Azure, billed as prompt tokens the body does not hold.
- Anthropic's server-side compaction (a `context_management` edit `compact_*`): an extra
  sampling pass, reading the whole context and writing a summary no field of the request caps.

- a named service's own chat fields, sent as they are to a target priced by its list
  (`check_routes`): OpenRouter's `models` (fallback models it serves, at their own prices, when
  the first fails: a prompt too long for it is enough) and `plugins` (web search and PDF
  parsing, billed per result or page apart from the tokens); xAI's `search_parameters` (Live
  Search, $25 per 1,000 sources used, apart from the tokens).

`check_inputs` refuses a limited request holding any of them with a 400 naming the part. A
request under no limit is served as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tallygate.errors import InvalidRequest
from tallygate.pipeline.image_tokens import IMAGE_PARTS

_WALKED = ("messages", "input", "system", "instructions")  # where a body's content parts are
_ALWAYS = {"file": "files", "input_file": "files", "input_audio": "audio input"}
_BOUNDED_DOCUMENTS = ("text", "content")  # a Messages document source that is its own text


def check_inputs(body: dict[str, Any], endpoint: str) -> None:
    """Raise `InvalidRequest` naming the first part of `body` whose cost its bytes do not bound."""
    if body.get("cached_content") is not None:
        raise _refused("cached_content", "stored context caches")
    if body.get("data_sources") is not None:
        raise _refused("data_sources", "documents retrieved by the provider (Azure On Your Data)")
    edits = body.get("context_management")
    edits = edits.get("edits") if isinstance(edits, dict) else None
    for i, edit in enumerate(edits if isinstance(edits, list) else ()):
        kind = edit.get("type") if isinstance(edit, dict) else None
        if isinstance(kind, str) and kind.startswith("compact_"):
            raise _refused(f"context_management.edits[{i}].type", "server-side compaction (an extra, uncapped pass)")
    if endpoint == "chat" and isinstance(turns := body.get("messages"), list):
        for i, turn in enumerate(turns):
            if isinstance(turn, dict) and turn.get("audio") is not None:
                raise _refused(f"messages[{i}].audio", "stored audio answers")
    if endpoint == "responses" and isinstance(items := body.get("input"), list):
        for i, item in enumerate(items):
            if isinstance(item, dict) and (item.get("type") == "item_reference"
                                           or ("type" not in item and "role" not in item)):
                raise _refused(f"input[{i}]", "stored items (item_reference)")
    for name in _WALKED:
        _walk(body.get(name), name)


# By price list (`ProviderConfig.price_list`): a service's own chat fields billed apart from what
# the gateway prices.
_SERVICE_FIELDS = {
    "openrouter": {"models": "other models (OpenRouter's fallbacks, billed at their own prices)",
                   "plugins": "OpenRouter's plugins (web search and PDF parsing, billed apart from the tokens)"},
    "x-ai": {"search_parameters": "xAI's Live Search (billed per source used, apart from the tokens)"},
}


def check_routes(body: dict[str, Any], endpoint: str, price_lists: Sequence[str]) -> None:
    """Raise `InvalidRequest` naming a service's own field of a chat `body` (sent as it is) whose
    cost its bytes do not bound, when a target is priced by that service's list (`price_lists`)."""
    if endpoint != "chat":
        return
    for price_list in price_lists:
        for name, what in _SERVICE_FIELDS.get(price_list, {}).items():
            if body.get(name) is not None:
                raise _refused(name, what)


def _walk(value: object, at: str) -> None:
    if isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{at}[{i}]")
        return
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    if not isinstance(kind, str):  # any JSON: a list is not even hashable
        kind = None
    if kind in _ALWAYS:
        raise _refused(f"{at}.type", _ALWAYS[kind])
    if kind == "document":
        source = value.get("source")
        if not (isinstance(source, dict) and source.get("type") in _BOUNDED_DOCUMENTS):
            raise _refused(f"{at}.source", "documents other than text (a PDF is billed per page)")
    if kind in IMAGE_PARTS:
        where, media = _image_media(value)
        if media is not None and not media.startswith("image/"):
            raise _refused(f"{at}.{where}", f"non-image data ({media}) in an image part")
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            _walk(v, f"{at}.{k}")


def _image_media(part: dict[str, Any]) -> tuple[str, str | None]:
    """(the field holding an image part's data, its media type if it says one)."""
    source = part.get("source")
    if isinstance(source, dict):  # Messages: {"type": "base64", "media_type": ...}
        media = source.get("media_type")
        return "source.media_type", media.lower() if isinstance(media, str) else None
    url = part.get("image_url")
    where = "image_url"
    if isinstance(url, dict):
        url, where = url.get("url"), "image_url.url"
    if isinstance(url, str) and url[:5].lower() == "data:":
        return where, url[5:].split(";", 1)[0].split(",", 1)[0].strip().lower()
    return where, None


def _refused(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {what} cannot be bounded before the response, so a request counted "
                          "against a monthly limit or a tokens-per-minute rate limit cannot send them",
                          param=param)
