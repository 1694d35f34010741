"""What every provider that translates OpenAI chat requests shares: the walk over `messages`
into a system text and alternating user / model turns, tool-call arguments, data URLs, and the
400 that names the offending field. Each provider supplies how one message becomes its blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tallygate.errors import InvalidRequest

ToBlocks = Callable[[dict, str], list[dict]]  # (message, its path "messages[i]") -> blocks


def invalid(param: str, problem: str) -> InvalidRequest:
    """InvalidRequest("<param> <problem>") naming the offending field."""
    return InvalidRequest(f"{param} {problem}", param=param)


def chat_turns(messages: object, *, model_role: str, key: str, system: Callable[[dict, str], str],
               user: ToBlocks, assistant: ToBlocks, tool: ToBlocks) -> tuple[str, list[dict]]:
    """(system text, turns `{"role": "user" | model_role, key: blocks}`) of OpenAI `messages`:
    system and developer messages joined by a blank line; consecutive turns of one role merged
    (a tool result is the user's turn); messages without blocks skipped."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty array")
    texts: list[str] = []
    turns: list[dict] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(at, "must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            texts.append(system(msg, at))
            continue
        if role == "user":
            blocks, turn = user(msg, at), "user"
        elif role == "assistant":
            blocks, turn = assistant(msg, at), model_role
        elif role == "tool":
            blocks, turn = tool(msg, at), "user"
        else:
            raise invalid(f"{at}.role", "must be one of system, developer, user, assistant, tool")
        add_turn(turns, turn, blocks, key)
    if not turns:
        raise invalid("messages", "must include a user or assistant message")
    return "\n\n".join(t for t in texts if t), turns


def add_turn(turns: list[dict], role: str, blocks: list[dict], key: str = "content") -> None:
    """Add `blocks` to `turns` as `role`'s: to the last turn when it is that role's (providers
    want turns that alternate), else as a new one; no blocks, no turn."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(blocks)
    else:
        turns.append({"role": role, key: blocks})


def tool_arguments(raw: object, param: str) -> dict:
    """A tool call's `arguments` (a JSON object, usually as a string) as a dict."""
    if raw in (None, ""):
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise invalid(param, "must be a JSON object")
    return value


def data_url(url: object) -> tuple[str, str] | None:
    """(media type in lower case, base64 data) of a `data:<type>;base64,<data>` URL, else None."""
    header, _, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    if not (header.startswith("data:") and header.endswith(";base64") and data):
        return None
    return header[5:-7].lower(), data
