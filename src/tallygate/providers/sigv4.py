"""SigV4 signatures for Bedrock requests, by botocore's `SigV4Auth`, without its per-request
overhead.

botocore signs a generic `AWSRequest` whose headers are an `email.message` and whose URL is split,
normalised and quoted again on every request, and derives the signing key (four HMACs) each
time: about 60 µs a request. Here botocore's own `SigV4Auth` does every step of the signature
(canonical request, string to sign, HMACs) on a small request object; what depends only on the
URL (canonical path, query and host) is computed by botocore once per URL and kept, and the
signing-key chain (HMACs of the secret, the day, region and service) is kept per day, so a
request costs one payload SHA-256, one string-to-sign SHA-256 and one HMAC. A wrong signature
is a 403 from AWS, and from `tests/fakes/bedrock.py`, which checks it with botocore.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth, _host_from_url

_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST) | {"authorization", "user-agent"}


class _Headers(dict[str, str]):
    """The headers `SigV4Auth.canonical_headers` reads (one value per name)."""

    def get_all(self, name: str) -> list[str]:
        return [self[name]] if name in self else []


class SigningRequest:
    """What `SigV4Auth` reads of a request: method, url, headers, body, params, context."""

    __slots__ = ("method", "url", "headers", "body", "params", "context")

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        self.method = "POST"
        self.url = url
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {}
        self.context: dict[str, Any] = {}


class CachedSigV4Auth(SigV4Auth):  # type: ignore[misc]
    """botocore's SigV4 signer for one set of credentials, with URL parts and signing keys kept."""

    def __init__(self, credentials: Any, service_name: str, region_name: str) -> None:
        super().__init__(credentials, service_name, region_name)
        self._keys: dict[tuple[bytes, str], bytes] = {}

    def _sign(self, key: bytes, msg: str, hex: bool = False) -> Any:  # noqa: A002 (botocore's name)
        if hex:  # the signature itself: per request
            return super()._sign(key, msg, hex=True)
        derived = self._keys.get((key, msg))  # the signing-key chain: the same all day
        if derived is None:
            if len(self._keys) > 64:
                self._keys.clear()
            derived = self._keys[(key, msg)] = super()._sign(key, msg)
        return derived

    def headers_to_sign(self, request: Any) -> _Headers:
        headers = _Headers((k.lower(), v) for k, v in request.headers.items() if k.lower() not in _UNSIGNED)
        if "host" not in headers:
            headers["host"] = _host(request.url)
        return headers

    def _normalize_url_path(self, path: str) -> str:
        return _canonical_path(path)

    def canonical_query_string(self, request: Any) -> str:
        return _canonical_query(request.url)


@lru_cache(maxsize=1024)
def _canonical_path(path: str) -> str:
    return str(SigV4Auth._normalize_url_path(None, path))  # type: ignore[arg-type]


@lru_cache(maxsize=1024)
def _canonical_query(url: str) -> str:
    from urllib.parse import urlsplit

    return str(SigV4Auth._canonical_query_string_url(None, urlsplit(url)))  # type: ignore[arg-type]


@lru_cache(maxsize=1024)
def _host(url: str) -> str:
    return str(_host_from_url(url))


def sign(signer: CachedSigV4Auth, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
    """`headers` plus `X-Amz-Date`, the session token if any and `Authorization`, for POSTing
    `body` to `url`."""
    request = SigningRequest(url, dict(headers), body)
    signer.add_auth(request)
    return request.headers
