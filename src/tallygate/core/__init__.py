"""Pure shared pieces: money, time buckets, the metric vector, tag paths and the ledger record.

Nothing here imports anything else of the project's (the layering contract in pyproject.toml
checks it), so every layer above may use it.
"""
