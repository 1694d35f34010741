"""Money as integer picodollars (1e-12 USD), shown as exact decimal dollars."""

from __future__ import annotations

from decimal import Decimal

import orjson

PICO_PER_USD = 10**12


def usd(pico: int) -> Decimal:
    """Picodollars as an exact Decimal number of dollars."""
    return (Decimal(pico) / PICO_PER_USD).normalize() if pico else Decimal(0)


def usd_text(pico: int) -> str:
    """Picodollars as a plain decimal string of dollars: "2000", "0.000015" (never exponents)."""
    return format(usd(pico), "f")


def usd_json(pico: int) -> orjson.Fragment:
    """Dollars as a JSON number written from the exact decimal digits (never via a float)."""
    return orjson.Fragment(usd_text(pico).encode())
