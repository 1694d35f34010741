"""What OpenAI refuses with a 400, refused by the mock provider too, so that the demo answers a
malformed request as the provider it stands in for would: naming the field, never a 200.

The gateway checks only the fields it must understand itself (`pipeline/validate.py`); the rest
is the provider's to judge, and the mock is a provider. Only structure and types are checked
here, as OpenAI's API does before it reads a word: roles, required content, tool definitions and
calls, `tool_choice`, `stop`, `response_format`, and a few scalar fields.
"""

from __future__ import annotations

from typing import Any

from tallygate.errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TYPED = {"user": str, "reasoning_effort": str, "service_tier": str, "parallel_tool_calls": bool,
          "logprobs": bool, "store": bool, "logit_bias": dict, "metadata": dict}
_KIND = {str: "a string", bool: "a boolean", dict: "an object"}


def _refuse(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {problem}", param=param)


def check_chat(body: dict[str, Any]) -> None:
    """A chat completion request as OpenAI's API checks it; `InvalidRequest` naming the field."""
    for i, message in enumerate(body.get("messages") or ()):
        _message(message, f"messages[{i}]")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _refuse("tools", "must be an array")
        for i, tool in enumerate(tools):
            _tool(tool, f"tools[{i}]")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("none", "auto", "required") and not isinstance(choice, dict):
        raise _refuse("tool_choice", 'must be "none", "auto", "required" or an object naming a tool')
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise _refuse("stop", "must be a string or an array of up to 4 strings")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema")):
        raise _refuse("response_format", 'must be an object whose type is "text", "json_object" or "json_schema"')
    if isinstance(fmt, dict) and fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
        raise _refuse("response_format.json_schema", "must be an object")
    seed = body.get("seed")
    if seed is not None and type(seed) is not int:
        raise _refuse("seed", "must be an integer")
    for name, kind in _TYPED.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise _refuse(name, f"must be {_KIND[kind]}")


def _message(message: object, at: str) -> None:
    if not isinstance(message, dict):
        return  # the gateway's own check refuses it first
    role = message.get("role")
    if role not in ROLES:
        raise _refuse(f"{at}.role", f"must be one of {', '.join(ROLES)}")
    if role in ("system", "developer", "user") and message.get("content") is None:
        raise _refuse(f"{at}.content", f"is required in a {role} message")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _refuse(f"{at}.tool_call_id", "must be a string")
    calls = message.get("tool_calls")
    if role == "assistant" and calls is not None:
        if not isinstance(calls, list):
            raise _refuse(f"{at}.tool_calls", "must be an array")
        for j, call in enumerate(calls):
            where = f"{at}.tool_calls[{j}]"
            if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                raise _refuse(f"{where}.id", "must be a string")
            fn = call.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(
                    fn.get("arguments"), str):
                raise _refuse(f"{where}.function", "must be an object with a string name and string arguments")


def _tool(tool: object, at: str) -> None:
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        raise _refuse(f"{at}.type", "must be a string naming the tool's type")
    if tool["type"] == "function":
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _refuse(f"{at}.function.name", "must be a string")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise _refuse(f"{at}.function.parameters", "must be an object (a JSON schema)")


def check_embeddings(body: dict[str, Any]) -> None:
    """`dimensions` and `encoding_format` as OpenAI's embeddings API checks them."""
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise _refuse("dimensions", "must be a positive integer")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise _refuse("encoding_format", 'must be "float" or "base64"')
