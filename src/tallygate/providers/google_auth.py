"""OAuth access tokens for Google Cloud APIs (Vertex AI) from `google-auth`, refreshed early.

Credentials come from a service-account JSON file (`credentials_file`), else Application
Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, workload identity federation, gcloud's
user credentials or the metadata server. google-auth treats a token as expired 3 min 45 s
before its expiry, so a refresh happens before it runs out. A refresh is a blocking HTTP call:
it runs in a thread, one at a time, only when the token is (nearly) expired, never otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tallygate.errors import UpstreamHTTPError

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class GoogleAccessToken:
    """`Authorization` header values for one provider's Google credentials."""

    def __init__(self, provider: str, credentials_file: str | None) -> None:
        self._provider = provider
        self._file = credentials_file
        self._credentials: Any = None
        self._lock = asyncio.Lock()

    async def authorization(self) -> str:
        """`Bearer <token>`, refreshing the token first if it is missing or about to expire."""
        creds = self._credentials
        if creds is None or not creds.valid:
            async with self._lock:
                if self._credentials is None or not self._credentials.valid:
                    await asyncio.to_thread(self._refresh)
                creds = self._credentials
        return f"Bearer {creds.token}"

    def _refresh(self) -> None:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
        from google.oauth2 import service_account

        try:
            if self._credentials is None:
                if self._file:
                    self._credentials = service_account.Credentials.from_service_account_file(
                        self._file, scopes=SCOPES)  # type: ignore[no-untyped-call]
                else:
                    self._credentials, _ = google.auth.default(scopes=SCOPES)
            self._credentials.refresh(google.auth.transport.requests.Request())
        except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
            # Our credentials, not the caller's mistake: 401 upstream -> 502 upstream_auth_failed.
            raise UpstreamHTTPError(401, f"provider {self._provider!r} could not get a Google access "
                                         f"token ({type(exc).__name__})") from None
