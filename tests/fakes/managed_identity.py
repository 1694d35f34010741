"""Fake managed-identity token endpoints of Azure Arc and Service Fabric on loopback, which
azure-identity's ManagedIdentityCredential picks by environment (`env(...)` gives it).

    with FakeArc(key_dir) as arc:        # IDENTITY_ENDPOINT + IMDS_ENDPOINT
        arc.env()                        # what selects it
    with FakeServiceFabric(folder) as sf:  # IDENTITY_ENDPOINT + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT
        sf.env()

Azure Arc (the Hybrid Instance Metadata Service, HIMDS): GET /metadata/identity/oauth2/token
?api-version=2020-06-01&resource=<resource> with `Metadata: true`. Without `Authorization` it
answers 401 with `WWW-Authenticate: Basic realm=<key file>`, a fresh secret written to a `.key`
file in `key_dir` (on a real machine `/var/opt/azcmagent/tokens`, readable by the agent's group
only; azure-identity refuses a file anywhere else); asked again with `Authorization: Basic
<that secret>`, it answers the token as IMDS does (every number a string). A wrong secret: 401.

Service Fabric: GET <IDENTITY_ENDPOINT>?api-version=2019-07-01-preview&resource=<resource> over
HTTPS with a certificate of the cluster's own (self-signed here: azure-identity does not verify
it, the thumbprint variable only has to be set), the header `Secret: <IDENTITY_HEADER>`;
answers `{"token_type", "access_token", "expires_on" (epoch seconds, a number), "resource"}`. A
missing or wrong secret: 401 `{"error": {"code": "SecretHeaderNotFound" | ...}}`.
"""
from __future__ import annotations

import secrets
import ssl
import time
from pathlib import Path

from aiohttp import web

from .entra import self_signed
from .imds import FakeImds

ARC_KEY_DIR = Path("/var/opt/azcmagent/tokens")  # the only folder azure-identity reads the key from (Linux)
SF_SECRET = "sf-identity-header-secret"


class FakeArc(FakeImds):
    """Azure Arc's HIMDS token endpoint with its challenge file."""

    def __init__(self, key_dir: Path = ARC_KEY_DIR, token_lifetime_s: int = 3600) -> None:
        super().__init__(token_lifetime_s)
        self.key_dir = key_dir
        self.key_files: list[Path] = []
        self._secret = ""

    def env(self) -> dict[str, str]:
        url = self.root_url + "/metadata/identity/oauth2/token"
        return {"IDENTITY_ENDPOINT": url, "IMDS_ENDPOINT": self.root_url}

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for path in self.key_files:
            path.unlink(missing_ok=True)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/metadata/identity/oauth2/token", self._arc_token)
        return app

    async def _arc_token(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata") != "true":
            return self._error("Required metadata header not specified")
        if request.query.get("api-version") != "2020-06-01" or not request.query.get("resource"):
            return self._error("Required query variable 'api-version' or 'resource' is missing or invalid")
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic" or not self._secret or not secrets.compare_digest(secret, self._secret):
            self._secret = secrets.token_hex(32)
            path = self.key_dir / f"{secrets.token_hex(8)}.key"
            path.write_text(self._secret)
            self.key_files.append(path)
            return web.Response(status=401, headers={"WWW-Authenticate": f"Basic realm={path}"})
        self._secret = ""  # a secret answers one challenge
        return self._issue(request.query["resource"], "arc")

    def _issue(self, resource: str, prefix: str) -> web.Response:
        now = int(time.time())
        token = f"{prefix}-access-{len(self.tokens) + 1}"
        self.tokens[token] = now + self.token_lifetime_s
        life, expires = str(self.token_lifetime_s), str(now + self.token_lifetime_s)
        return web.json_response({"access_token": token, "expires_in": life, "expires_on": expires,
                                  "not_before": str(now), "resource": resource, "token_type": "Bearer"})


class FakeServiceFabric(FakeArc):
    """Service Fabric's managed-identity token endpoint, HTTPS with a self-signed certificate."""

    def __init__(self, folder: Path, token_lifetime_s: int = 3600) -> None:
        super().__init__(folder, token_lifetime_s)
        cert, key = self_signed(folder)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(cert, key)

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.root_url + "/metadata/identity/oauth2/token",
                "IDENTITY_HEADER": SF_SECRET, "IDENTITY_SERVER_THUMBPRINT": "0" * 40}

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/metadata/identity/oauth2/token", self._sf_token)
        return app

    async def _sf_token(self, request: web.Request) -> web.Response:
        secret = request.headers.get("Secret")
        if secret != SF_SECRET:
            code = "SecretHeaderNotFound" if secret is None else "SecretHeaderMismatch"
            return web.json_response({"error": {"code": code, "message": "Secret header is invalid"}}, status=401)
        if request.query.get("api-version") != "2019-07-01-preview" or not request.query.get("resource"):
            return web.json_response({"error": {"code": "InvalidParameter", "message": "api-version"}}, status=400)
        now = int(time.time())
        token = f"sf-access-{len(self.tokens) + 1}"
        self.tokens[token] = now + self.token_lifetime_s
        return web.json_response({"token_type": "Bearer", "access_token": token,
                                  "expires_on": now + self.token_lifetime_s, "resource": request.query["resource"]})
