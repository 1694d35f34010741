"""Tallygate: an OpenAI-compatible LLM gateway that meters, prices and attributes every call."""

__version__ = "0.1.0"
