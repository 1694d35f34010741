"""Schemathesis hooks (`SCHEMATHESIS_HOOKS`) for the positive-data run over every route.

JSON Schema cannot say rules that span several parameters or list items, so a request the
document allows may break one of them. Such a refusal is dropped only when it is a 400 whose
message is one of these rules; any other refusal of a documented request still fails the run,
as does any 5xx.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

ACROSS_PARAMETERS = re.compile("|".join([
    r"from is after to$",                                        # logs, alerts, analytics ranges
    r"group_by names a dimension twice$",                        # a list's items
    r"group_by may hold one of tag, tag_level\.<n>$",
    r"group_by may hold one time dimension$",
    r"tag_level\.\d+ is above the tag filter ",                  # group_by against tag
    r"an invoice needs lines that do not overlap",               # export: group_by against itself
    r"this question is answered from the raw ledger",            # from/to against the ledger's size
    r"to is more than 25 hours after from",                      # minutes: from/to against each other
]))


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return True
    return not ACROSS_PARAMETERS.search(message)
