"""A fake Vertex AI (Gemini models) with a fake Google OAuth token endpoint, on loopback.

    with FakeVertex() as v:
        path = v.service_account_file(tmp_path)   # a service-account JSON whose token_uri is v's /token
        v.root_url                                # base_url for the gateway

POST /token: Google's JWT-bearer grant (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
`assertion=<JWT>`). The JWT's RS256 signature is verified with the service account's public key
(google-auth's own `jwt.decode`); a valid one gets `{"access_token", "expires_in", "token_type"}`
with `expires_in = token_lifetime_s`, else 400 `invalid_grant`, as Google answers.
POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
(and :streamGenerateContent?alt=sse): FakeGemini's answers, for `Authorization: Bearer <a token
this fake issued and that has not expired>`, else Google's 401 UNAUTHENTICATED.
POST .../publishers/anthropic/models/{model}:rawPredict (and :streamRawPredict): Claude on Vertex,
the Messages body without `model` (it is in the URL) and with an `anthropic_version` in the body
(Google documents `vertex-2023-10-16`; Anthropic's SDK sends its own API date; none is Anthropic's
400 invalid_request_error); answered as the
Messages API answers (JSON, or Anthropic's SSE events when the body has `"stream": true`).
.../publishers/anthropic/models/count-tokens:rawPredict takes the body with `model`.
Model names pick FakeUpstream's scenarios by their part before `@` (`fail-429@1`: Vertex's quota
error, Google-shaped, with `retry-after`; `cachewrite-<n>@…`, `cached-<n>@…`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from . import wire
from .gemini import FakeGemini, google_error


class FakeVertex(FakeGemini):
    """Gemini on Vertex AI's URLs, behind bearer tokens from its own token endpoint."""

    def __init__(self, token_lifetime_s: int = 3600) -> None:
        super().__init__()
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}  # issued access token -> expiry (monotonic)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
        self._public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    def service_account_file(self, folder: Path) -> Path:
        path = folder / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "tally-project", "private_key_id": "fake-key-1",
            "private_key": self._private_pem, "client_email": "gateway@tally-project.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": self.root_url + "/token"}))
        return path

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        app.router.add_post("/token", self._token)
        app.router.add_post("/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{call}",
                            self._generate)
        app.router.add_post("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{call}",
                            self._raw_predict)
        app.router.add_route("*", "/{tail:.*}", self._missing)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise ValueError("grant_type")
            # google-auth always addresses the JWT to Google's token endpoint, whatever token_uri says
            jwt.decode(str(form.get("assertion")), certs=self._public_pem,
                       audience="https://oauth2.googleapis.com/token")
        except ValueError:
            return self._json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        token = f"ya29.fake-{len(self.tokens) + 1}"
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        return self._json(200, {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"})

    def _auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and self.tokens.get(token, 0) > time.monotonic():
            return None
        return self._json(401, google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                                                 "access token, login cookie or other valid authentication "
                                                 "credential."))

    async def _raw_predict(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        if method not in ("rawPredict", "streamRawPredict"):
            return await self._missing(request)
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._json(400, google_error(400, "Invalid JSON payload received."))
        if not isinstance(body.pop("anthropic_version", None), str):  # Anthropic's SDK sends its own date
            return self._json(400, wire.anthropic_error("invalid_request_error", "anthropic_version: Field required"))
        if model == "count-tokens":
            if (err := wire.check_anthropic({**body, "max_tokens": 1})) is not None:
                return self._json(400, err)
            return self._json(200, {"input_tokens": wire.count_prompt_tokens(body)})
        if "model" in body:
            return self._json(400, wire.anthropic_error("invalid_request_error",
                                                        "model: Extra inputs are not permitted"))
        anthropic_body = {**body, "model": model}
        if (err := wire.check_anthropic(anthropic_body)) is not None:
            return self._json(400, err)
        sc = wire.parse_scenario(model.partition("@")[0])
        if sc.kind == "fail":
            resp = self._json(sc.status, google_error(sc.status, f"fake failure {sc.status}") if sc.status == 429
                              else wire.anthropic_failure(sc.status, model))
            if sc.status == 429:
                resp.headers["retry-after"] = "2"
            return resp
        if method == "rawPredict":
            if body.get("stream"):
                return self._json(400, google_error(400, "stream: true is for :streamRawPredict"))
            return web.Response(body=wire.anthropic_json(anthropic_body, sc), content_type="application/json")
        resp = web.StreamResponse(status=200)
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for i, event in enumerate(wire.anthropic_events(anthropic_body, sc)):
            if i == 3 and sc.kind == "cut-stream":
                request.transport.close()  # type: ignore[union-attr]
                return resp
            await resp.write(event)
        await resp.write_eof()
        return resp
