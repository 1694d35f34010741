"""The Responses API's tools on Chat Completions (pure, no I/O): what Codex and the SDKs offer.

Each Responses tool type, when the model is served through the chat translation:
- `function`: a chat function, as it is.
- `custom` (free-form input, as Codex's `apply_patch`): a chat function taking one string,
  `input`; the model's call comes back as a `custom_tool_call` with that string. A grammar
  `format` is described to the model, not enforced (chat has no constrained decoding).
- `namespace` (a named group of function and custom tools, as Codex's `multi_agent_v1`): each
  member becomes a chat function named `<namespace>__<name>`; calls come back with
  `namespace` and `name` apart, as OpenAI returns them.
- `web_search` / `web_search_preview`: dropped. The model is not offered a search it has no
  way to run (no provider behind a translation runs OpenAI's hosted search); a `tool_choice`
  that forces it is a 400.
- tools marked `defer_loading` (found by OpenAI's hosted tool search): dropped likewise.
- every other built-in tool (file_search, code_interpreter, computer_use, image_generation,
  mcp, local_shell, shell, apply_patch, tool_search ...): a 400 naming the tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tallygate.errors import InvalidRequest

SEPARATOR = "__"
DROPPED = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                     "web_search_preview_2025_03_11"})
_INPUT_SCHEMA = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                 "additionalProperties": False}


def _invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {problem}", param=param)


def untranslatable(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {what} is not supported for models that are not served by an "
                          "`openai` provider", param=param)


@dataclass(frozen=True, slots=True)
class ToolName:
    """One tool as the Responses API names it."""

    name: str
    namespace: str | None = None
    custom: bool = False


def chat_name(name: object, namespace: object = None) -> str:
    """The chat function name of a Responses tool (namespaced ones joined with `__`)."""
    return f"{namespace}{SEPARATOR}{name}" if isinstance(namespace, str) and namespace else str(name)


class ToolNames:
    """The request's tools by their chat function name, to turn the model's calls back into
    Responses items."""

    def __init__(self, tools: object) -> None:
        self._names: dict[str, ToolName] = {}
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
                for inner in tool["tools"]:
                    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                        self._names[chat_name(inner["name"], tool.get("name"))] = ToolName(
                            inner["name"], str(tool.get("name")), inner.get("type") == "custom")
            elif tool.get("type") in ("function", "custom") and isinstance(tool.get("name"), str):
                self._names[tool["name"]] = ToolName(tool["name"], None, tool["type"] == "custom")

    def get(self, name: object) -> ToolName:
        found = self._names.get(name) if isinstance(name, str) else None
        return found or ToolName(str(name) if name is not None else "")


def to_chat_tools(tools: object) -> list[dict]:
    """Responses `tools` -> chat `tools`; policy in the module docstring."""
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out: list[dict] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid(f"{at}.type", "must be a string naming the tool's type")
        kind = tool["type"]
        if kind == "namespace":
            members, name = tool.get("tools"), tool.get("name")
            if not isinstance(name, str) or not isinstance(members, list):
                raise _invalid(at, "must be a namespace with a name and an array of tools")
            for j, inner in enumerate(members):
                out += _member(inner, f"{at}.tools[{j}]", name, seen)
        elif kind in ("function", "custom"):
            out += _member(tool, at, None, seen)
        elif kind in DROPPED:
            continue
        else:
            raise untranslatable(f"{at}.type", f"the built-in tool {kind!r}")
    return out


def _member(tool: object, at: str, namespace: str | None, seen: set[str]) -> list[dict]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if not isinstance(kind, str):
        raise _invalid(f"{at}.type", "must be a string naming the tool's type")
    if kind not in ("function", "custom"):
        raise untranslatable(f"{at}.type", f"the built-in tool {kind!r}")
    assert isinstance(tool, dict)
    if not isinstance(tool.get("name"), str):
        raise _invalid(f"{at}.name", "must be a string")
    if tool.get("defer_loading") is True:
        return []
    name = chat_name(tool["name"], namespace)
    if name in seen:
        raise _invalid(f"{at}.name", f"{name!r} is offered twice")
    seen.add(name)
    if kind == "function":
        fn = {k: tool[k] for k in ("description", "parameters", "strict") if tool.get(k) is not None}
    else:
        fn = {"description": _custom_description(tool), "parameters": _INPUT_SCHEMA}
    return [{"type": "function", "function": {"name": name, **fn}}]


def _custom_description(tool: dict) -> str:
    text = str(tool.get("description") or "")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        text += (f"\n\nPass the tool's whole input as the string `input`; it must follow this "
                 f"{fmt.get('syntax') or ''} grammar:\n{fmt['definition']}")
    else:
        text += "\n\nPass the tool's whole input, free-form text, as the string `input`."
    return text.strip()


def chat_tool_choice(choice: object) -> object:
    """Responses `tool_choice` -> chat's; forcing a dropped tool is a 400."""
    if choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "name": ...}')
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": chat_name(choice["name"], choice.get("namespace"))}}
    if kind in DROPPED:
        raise untranslatable("tool_choice", f"forcing the built-in tool {kind!r}")
    raise _invalid("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "name": ...}')


def call_input(item: dict) -> dict:
    """A `function_call` or `custom_tool_call` input item as a chat tool call."""
    if item.get("type") == "custom_tool_call":
        arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
    else:
        arguments = item.get("arguments") or ""
    return {"id": item.get("call_id"), "type": "function",
            "function": {"name": chat_name(item.get("name"), item.get("namespace")), "arguments": arguments}}


def call_item(item_id: str, call_id: object, tool: ToolName, arguments: str, status: str = "completed") -> dict:
    """The Responses output item for a chat tool call: a `function_call` (with its `namespace`
    when it has one), or a `custom_tool_call` carrying the string the model passed as `input`."""
    if tool.custom:
        out = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": tool.name,
               "input": custom_input(arguments), "status": status}
    else:
        out = {"type": "function_call", "id": item_id, "call_id": call_id, "name": tool.name,
               "arguments": arguments, "status": status}
    if tool.namespace is not None:
        out["namespace"] = tool.namespace
    return out


def custom_input(arguments: str) -> str:
    """The `input` string of a custom tool's call, from the chat call's JSON arguments (the
    arguments as they are when the model did not send that object)."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments
