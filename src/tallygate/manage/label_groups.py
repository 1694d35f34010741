"""No escape through labels: a key bound by a label-group limit (a budget or a rate limit) cannot
create a key outside that group, nor move a key out of it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from tallygate.errors import PermissionDenied
from tallygate.store.budgets import labels_match
from tallygate.types import Principal


class LabelGroupLimit(Protocol):
    """A budget or rate limit scoped to a label group: `scope == {"label": {name: value, ...}}`."""

    @property
    def name(self) -> str: ...

    @property
    def scope(self) -> dict[str, Any]: ...


L = TypeVar("L", bound=LabelGroupLimit)


def label_escape(limits: Iterable[L], caller: Principal, before: dict[str, str],
                 after: dict[str, str]) -> L | None:
    """The limit of `limits` binding `caller` that a key would leave going from labels `before`
    to `after`, if any."""
    if caller.key_id is None:
        return None
    for limit in limits:
        pairs = limit.scope["label"]
        if labels_match(pairs, caller.labels) and labels_match(pairs, before) and not labels_match(pairs, after):
            return limit
    return None


def inherited_labels(limits: Iterable[LabelGroupLimit], caller: Principal, labels: dict[str, str],
                     kind: str) -> dict[str, str]:
    """`labels` of a key the caller creates, with the pairs of every limit of `limits` (a `kind`:
    "budget", "rate limit") binding the caller added; `PermissionDenied` if a label contradicts one."""
    if caller.key_id is None:
        return labels
    out = dict(labels)
    for limit in limits:
        pairs = limit.scope["label"]
        if not labels_match(pairs, caller.labels):
            continue
        for name, value in pairs.items():
            if out.setdefault(name, value) != value:
                raise PermissionDenied(f"label {name}={out[name]} would take the new key out of {kind} "
                                       f"{limit.name!r}, which binds this key", param=f"labels.{name}")
    return out
