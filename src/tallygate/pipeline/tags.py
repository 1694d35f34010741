"""Request tags: validation, the `X-Request-Tags` header, and the prefixes a tag rolls up to.

A tag is a path of one or more non-empty segments joined by `/` (`production`,
`team/feature/test`). Limits: at most `MAX_TAGS` tags per request, `MAX_TAG_LENGTH` characters
per tag, `MAX_DEPTH` segments per tag; no control or invisible formatting characters (zero-width
spaces, bidirectional overrides, line separators); no segment that is empty or has
leading or trailing whitespace. Bad tags are refused, never rewritten; exact duplicates are
collapsed.

The header carries the same tags for clients that cannot change the body: a comma-separated
list, each tag percent-encoded as UTF-8 (`%2C` for a comma inside a tag, `%C3%A9` for `é`).
Tags from the body and the header are merged.
"""

from __future__ import annotations

from urllib.parse import unquote

from tallygate.core.tagpath import MAX_DEPTH, MAX_TAG_LENGTH, MAX_TAGS, has_control_characters
from tallygate.core.textrules import has_invisible
from tallygate.errors import BadTag, InvalidRequest


def _check_tag(tag: object, where: str, *, as_filter: bool = False) -> str:
    if not isinstance(tag, str):
        raise BadTag(f"{where} must be a string, got {type(tag).__name__}")
    if not tag:
        raise BadTag(f"{where} is empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise BadTag(f"{where} {_shown(tag)} is longer than {MAX_TAG_LENGTH} characters")
    if (has_invisible if as_filter else has_control_characters)(tag):
        raise BadTag(f"{where} {_shown(tag)} contains a control or invisible formatting character")
    segments = tag.split("/")
    if len(segments) > MAX_DEPTH:
        raise BadTag(f"{where} {_shown(tag)} has more than {MAX_DEPTH} levels")
    for seg in segments:
        if not seg:
            raise BadTag(f"{where} {_shown(tag)} has an empty segment (leading, trailing or double '/')")
        if seg != seg.strip() and not as_filter:
            raise BadTag(f"{where} {_shown(tag)} has a segment with leading or trailing whitespace")
    return tag


def _shown(tag: str) -> str:
    """A refused tag as its error message quotes it (made only when refusing: most tags pass)."""
    return repr(tag if len(tag) <= 80 else tag[:77] + "...")


def parse_tags(body_tags: object, header: str | None) -> tuple[str, ...]:
    """Validate tags from the body (`request_tags`) and the header; return them de-duplicated."""
    found: list[str] = []
    if body_tags is not None:
        if not isinstance(body_tags, list):
            raise BadTag(f"request_tags must be an array of strings, got {type(body_tags).__name__}")
        found.extend(_check_tag(t, f"request_tags[{i}]") for i, t in enumerate(body_tags))
    if header:
        if not header.isascii():
            raise BadTag("X-Request-Tags must be ASCII: percent-encode other characters as UTF-8 "
                         "(e.g. caf%C3%A9 for café)")
        for i, part in enumerate(header.split(",")):
            part = part.strip()
            try:
                decoded = unquote(part, errors="strict")
            except UnicodeDecodeError:
                raise BadTag(f"X-Request-Tags item {i} {part!r} is not valid percent-encoded UTF-8") from None
            found.append(_check_tag(decoded, f"X-Request-Tags item {i}"))
    tags = tuple(dict.fromkeys(found))
    if len(tags) > MAX_TAGS:
        raise BadTag(f"request_tags has {len(tags)} tags; at most {MAX_TAGS} are allowed")
    return tags


def check_tag_filter(tag: str | None) -> str | None:
    """A `tag=` query filter, checked like a request tag (400 naming `tag`), except that
    unassigned code points and whitespace around a segment are let through (no stored tag has
    them: such a filter matches nothing), exactly as `/openapi.json` describes the parameter."""
    if tag is None:
        return None
    try:
        return _check_tag(tag, "tag", as_filter=True)
    except BadTag as err:
        raise InvalidRequest(err.message, param="tag") from None
