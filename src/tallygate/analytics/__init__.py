"""Spend analytics: dimensions and filters, the roll-up plan, metrics, percentiles, invoices.

All modules but `service` are pure (no database): `store/analytics.py` runs the plans made
here, `store/rollups.py` keeps the roll-up tables they read, and `service` shapes the answers
of the API and the CLI.
"""
