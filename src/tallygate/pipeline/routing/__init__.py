"""Routing: which targets serve a request, and trying them.

    policies.py   config -> `Policy` objects; `Router`: (model, key's policy) -> `Plan`
    plan.py       pure planners: fallback, weighted, latency -> ordered targets
    stats.py      per-target latency EWMA and circuit (cooldown, probe) state
    executor.py   `execute(call, plan, attempt)`: tries targets, retries, reports attempts
"""

from tallygate.pipeline.routing.executor import execute, stream_failed
from tallygate.pipeline.routing.plan import Plan
from tallygate.pipeline.routing.policies import Router

__all__ = ["Plan", "Router", "execute", "stream_failed"]
