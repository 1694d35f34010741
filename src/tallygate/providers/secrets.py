"""Provider secrets never reach a client: scrubbing by value, not only by pattern.

`Scrubber.from_config(config)` collects every configured provider credential (`api_key`, and
every extra header value: both already resolved from their `env:` variables) and every
upstream address (`base_url`, its host and host:port). `text()` removes them, anything shaped
like a credential (`errors.redact`) and any URL from text relayed from a provider (error
messages); `body()` removes the credentials from response bytes (success bodies and stream
events). Provider response headers are never relayed (only a parsed `retry-after`). Values shorter
than `MIN_SECRET` characters are not scrubbed by value (they would mangle ordinary text; they
are not secrets worth the name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from tallygate.errors import redact
from tallygate.settings import GatewayConfig

MIN_SECRET = 8
REDACTED = "[redacted]"
_URL = re.compile(r"(?i)\b(?:https?|wss?)://[^\s\"'<>]+")


class Scrubber:
    """Removes known secret values (longest first) and URLs from relayed text and bytes."""

    def __init__(self, secrets: Iterable[str], addresses: Iterable[str] = ()) -> None:
        secret_set = {v for v in secrets if v and len(v) >= MIN_SECRET}
        self._secrets = sorted(secret_set, key=len, reverse=True)
        self._bsecrets = [v.encode() for v in self._secrets]
        self._text_values = sorted(secret_set | {a for a in addresses if a and len(a) >= MIN_SECRET},
                                   key=len, reverse=True)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Scrubber:
        secrets: list[str] = []
        addresses: list[str] = []
        for provider in config.providers.values():
            if provider.api_key:
                secrets.append(provider.api_key)
            secrets.extend(provider.headers.values())
            if provider.base_url:
                parts = urlsplit(provider.base_url)
                addresses += [provider.base_url.rstrip("/"), parts.netloc, parts.hostname or ""]
        return cls(secrets, addresses)

    def text(self, text: str) -> str:
        """`text` (relayed from a provider) without secrets, upstream addresses, credential-like
        strings or URLs."""
        for value in self._text_values:
            if value in text:
                text = text.replace(value, REDACTED)
        return redact(_URL.sub("[url]", text)).replace("\x00", "\ufffd")

    def body(self, data: bytes) -> bytes:
        """`data` without the configured secrets (one substring search each; addresses stay:
        a model may rightly mention a public host)."""
        for value in self._bsecrets:
            if value in data:
                data = data.replace(value, b"[redacted]")
        return data
