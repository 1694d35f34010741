"""`/openapi.json` that says what the API validates: FastAPI's document, refined.

FastAPI derives the schema from the pydantic models and parameter types; the rules the
gateway checks in code (visible text, tag syntax, decimal strings, time and month ranges,
cursors, configured policies, no NUL anywhere) are added here from `manage/textrules.py`, so
that a request the document allows is never refused and one it forbids always is. Our 400 error
body replaces FastAPI's 422.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

from tallygate.core import textrules as rules

_QUERY_PATTERNS: dict[str, Callable[[], str]] = {"tag": rules.tag, "root": rules.tag, "cursor": lambda: rules.CURSOR,
                   "month": lambda: rules.MONTH, "group_by": lambda: rules.GROUP_BY,
                   "from": lambda: rules.TIME, "to": lambda: rules.TIME, "markup": lambda: rules.MARKUP}
_ENUMS: dict[str, list[str]] = {"format": ["json", "csv"], "labels": ["", "recorded", "current"]}


def _invoice_group_by() -> str:
    return rules.INVOICE_GROUP_BY


def _alert_cursor() -> str:
    return rules.ALERT_CURSOR


def _strings(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The string alternatives of a schema (itself, or inside anyOf)."""
    if schema.get("type") == "string":
        yield schema
    for alt in schema.get("anyOf", ()):
        yield from _strings(alt)


def _objects(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if schema.get("type") == "object":
        yield schema
    for alt in schema.get("anyOf", ()):
        yield from _objects(alt)


def refine(doc: dict[str, Any], policies: Collection[str]) -> dict[str, Any]:
    """Add the gateway's own checks to FastAPI's document (in place; returns it)."""
    for path, item in doc["paths"].items():
        for op in item.values():
            op.get("responses", {}).pop("422", None)
            for param in op.get("parameters", ()):
                pattern = _QUERY_PATTERNS.get(param["name"]) if param["in"] == "query" else None
                if param["name"] == "group_by" and path.endswith("/export"):
                    pattern = _invoice_group_by
                if param["name"] == "cursor" and path == "/v1/alerts":
                    pattern = _alert_cursor
                for s in _strings(param["schema"]):
                    if param["name"] in _ENUMS:
                        s["enum"] = _ENUMS[param["name"]]
                    else:
                        s["pattern"] = pattern() if pattern else rules.NO_NUL
                    if param["name"] in ("tag", "root"):
                        s["maxLength"] = 256
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    policy: dict[str, Any] = {"type": "string", "enum": sorted(policies)} if policies else {"not": {}}
    money = rules.decimal_schema(rules.MONEY, 9_000_000, 1e-12)["anyOf"]
    for schema in schemas.values():  # every money field (keys, budgets) as the validator takes it
        limit = schema.get("properties", {}).get("monthly_limit")
        if limit is not None and "anyOf" in limit:
            nullable = [{"type": "null"}] if any(a.get("type") == "null" for a in limit["anyOf"]) else []
            schema["properties"]["monthly_limit"] = {**limit, "anyOf": [*money, *nullable]}
    for model in ("KeyCreate", "KeyUpdate"):
        props = schemas[model]["properties"]
        for s in _strings(props["name"]):
            s["pattern"] = rules.visible()
        for obj in _objects(props["labels"]):
            obj["additionalProperties"] = False
            for value in obj.get("patternProperties", {}).values():
                value["pattern"] = rules.visible()
        props["policy"] = {"anyOf": [policy, {"type": "null"}], "title": "Policy",
                           "description": "a routing policy of the config"}
    for model, fields in (("KeyUpdate", ("name", "permissions", "period")),
                          ("BudgetUpdate", ("name", "scope", "monthly_limit", "period"))):
        update = schemas.get(model, {}).get("properties", {})
        for field in fields:  # may be left out, not set to null
            if field in update:
                update[field]["anyOf"] = [alt for alt in update[field]["anyOf"] if alt.get("type") != "null"]
    scope = schemas.get("BudgetScope", {}).get("properties")
    if scope:  # one of them, given (the rest null or left out), is what the validator takes
        for obj in _objects(scope["label"]):
            obj["minProperties"] = 1
            obj["additionalProperties"] = False
            for value in obj.get("patternProperties", {}).values():
                value["pattern"] = rules.visible()
        for s in _strings(scope["tag"]):
            s["pattern"], s["maxLength"] = rules.tag(), 256
        for s in _strings(scope["key"]):
            s["pattern"] = rules.NO_NUL
    feedback = schemas.get("FeedbackIn", {}).get("properties")
    if feedback:
        feedback["score"] = {**feedback["score"], **rules.decimal_schema(rules.SCORE, 1, 0.001)}
        for field in ("request_id", "comment"):
            for s in _strings(feedback[field]):
                s["pattern"] = rules.NO_NUL
    return doc
