"""A fake Azure Instance Metadata Service (IMDS) managed-identity token endpoint, plain HTTP on
loopback, as on a VM (`http://169.254.169.254`); azure-identity is pointed at it with
`AZURE_POD_IDENTITY_AUTHORITY_HOST`.

    with FakeImds(token_lifetime_s=3600) as imds:
        imds.root_url      # http://127.0.0.1:PORT
        imds.valid(h)      # whether `Authorization: h` carries a token it issued, not expired

GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<resource>[&client_id=...]
with the header `Metadata: true`; answers IMDS's JSON, every number a string:
`{"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
"resource", "token_type": "Bearer"}`. Without the header: 400 `invalid_request` "Required
metadata header not specified"; `identity=False` (no identity assigned to the VM): 400
`invalid_request` "Identity not found", as IMDS answers them.
"""
from __future__ import annotations

import time

from aiohttp import web

from .loopback import LoopbackServer

CLIENT_ID = "5e1f-managed-identity"


class FakeImds(LoopbackServer):
    """IMDS's managed-identity token endpoint."""

    def __init__(self, token_lifetime_s: int = 3600, identity: bool = True) -> None:
        super().__init__()
        self.token_lifetime_s, self.identity = token_lifetime_s, identity
        self.tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)

    def valid(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme == "Bearer" and self.tokens.get(token, 0) > time.time()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/metadata/identity/oauth2/token", self._token)
        return app

    @staticmethod
    def _error(description: str) -> web.Response:
        return web.json_response({"error": "invalid_request", "error_description": description}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata") != "true":
            return self._error("Required metadata header not specified")
        if request.query.get("api-version") != "2018-02-01" or not request.query.get("resource"):
            return self._error("Required query variable 'api-version' or 'resource' is missing or invalid")
        if not self.identity:
            return self._error("Identity not found")
        now = int(time.time())
        token = f"imds-access-{len(self.tokens) + 1}"
        self.tokens[token] = now + self.token_lifetime_s
        life = str(self.token_lifetime_s)
        return web.json_response({"access_token": token, "client_id": CLIENT_ID, "expires_in": life,
                                  "expires_on": str(now + self.token_lifetime_s), "ext_expires_in": life,
                                  "not_before": str(now), "resource": request.query["resource"],
                                  "token_type": "Bearer"})
