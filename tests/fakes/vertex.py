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
The GCE metadata server (google-auth finds it through GCE_METADATA_HOST / GCE_METADATA_IP), as on
Compute Engine, GKE workload identity and Cloud Run: GET / answers with `Metadata-Flavor: Google`
(google-auth's ping); under /computeMetadata/v1/, each needing the request header
`Metadata-Flavor: Google` (else 403), the account named `default` or by its email:
`instance/service-accounts/default/?recursive=true`
(`{"aliases", "email", "scopes"}`), `instance/service-accounts/default/token` (`{"access_token",
"expires_in", "token_type"}`, a token this fake accepts), `project/project-id` (text) and
`universe/universe-domain`. `metadata_account = False` (no service account on the instance)
makes the account routes a 404, as the metadata server answers then.
POST .../publishers/google/models/{model}:predict: text embeddings (`instances[].content`,
`parameters.outputDimensionality`) answered with `predictions[].embeddings.{values, statistics:
{truncated, token_count}}` and `metadata.billableCharacterCount`; gemini-embedding models take one
instance a call, others up to 250.
Model names pick FakeUpstream's scenarios by their part before `@` (`fail-429@1`: Vertex's quota
error, Google-shaped, with `retry-after`; `cachewrite-<n>@…`, `cached-<n>@…`); with `prompt_caching`,
rawPredict emulates Anthropic's `cache_control` caching as FakeUpstream does.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from . import wire, wire_anthropic
from .gemini import FakeGemini, google_error


class FakeVertex(FakeGemini):
    """Gemini on Vertex AI's URLs, behind bearer tokens from its own token endpoint."""

    def __init__(self, token_lifetime_s: int = 3600) -> None:
        super().__init__()
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}  # issued access token -> expiry (monotonic)
        self.metadata_account = True  # the instance has a service account
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
        app.router.add_get("/", self._metadata_ping)
        app.router.add_get("/computeMetadata/v1/{path:.*}", self._metadata)
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
        token = self._issue()
        return self._json(200, {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        if method == "predict":
            return self._auth(request) or await self._predict(request, model)
        return await super()._generate(request)

    async def _predict(self, request: web.Request, model: str) -> web.Response:
        """Text embeddings on `:predict`, as Vertex AI answers them: `{"instances": [{"content",
        "task_type"?, "title"?}], "parameters"?: {"outputDimensionality", "autoTruncate"}}` ->
        `{"predictions": [{"embeddings": {"values", "statistics": {"truncated", "token_count"}}}],
        "metadata": {"billableCharacterCount"}}`; gemini-embedding models take one instance."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        instances = body.get("instances") if isinstance(body, dict) else None
        limit = 1 if model.startswith("gemini-embedding") else 250
        if not isinstance(instances, list) or not 0 < len(instances) <= limit \
                or set(body) - {"instances", "parameters"}:
            return self._json(400, google_error(400, f"Invalid instances: at most {limit} for {model}"))
        params = body.get("parameters") or {}
        size = params.get("outputDimensionality", 768)
        if set(params) - {"outputDimensionality", "autoTruncate"} or not isinstance(size, int) or not 0 < size <= 3072:
            return self._json(400, google_error(400, "Invalid parameters"))
        predictions = []
        for instance in instances:
            text = instance.get("content") if isinstance(instance, dict) else None
            if not isinstance(text, str) or set(instance) - {"content", "task_type", "title"}:
                return self._json(400, google_error(400, "Invalid instance: content must be a string"))
            predictions.append({"embeddings": {
                "values": [round((len(text) % 9 + k) / 1000, 6) for k in range(size)],
                "statistics": {"truncated": False, "token_count": max(1, len(text) // 4)}}})
        chars = sum(len(i["content"]) for i in instances)
        return self._json(200, {"predictions": predictions, "metadata": {"billableCharacterCount": chars}})

    @staticmethod
    def _not_found(model: str) -> str:
        """Vertex AI's NOT_FOUND for a model the project or region does not have (Gemini or Claude)."""
        publisher = "anthropic" if model.startswith("claude") or "@" in model else "google"
        return (f"Publisher Model `projects/tally-project/locations/us-central1/publishers/{publisher}/models/"
                f"{model}` was not found or your project does not have access to it. Please ensure you are "
                "using a valid model version.")

    def _issue(self) -> str:
        token = f"ya29.fake-{len(self.tokens) + 1}"
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        return token

    @staticmethod
    async def _metadata_ping(request: web.Request) -> web.Response:
        return web.Response(text="computeMetadata/\n", headers={"Metadata-Flavor": "Google"})

    async def _metadata(self, request: web.Request) -> web.Response:
        flavor = {"Metadata-Flavor": "Google"}
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing required header: Metadata-Flavor", headers=flavor)
        path = request.match_info["path"]
        account = "gateway@tally-project.iam.gserviceaccount.com"
        if path.startswith("instance/service-accounts/") and not self.metadata_account:
            return web.Response(status=404, text="Not Found", headers=flavor)
        for alias in ("default", account):  # an account is named by its alias or its email
            path = path.replace(f"instance/service-accounts/{alias}/", "instance/service-accounts/default/")
        if path == "instance/service-accounts/default/" and request.query.get("recursive") == "true":
            return web.json_response({"aliases": ["default"], "email": account,
                                      "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}, headers=flavor)
        if path == "instance/service-accounts/default/token":
            return web.json_response({"access_token": self._issue(), "expires_in": self.token_lifetime_s,
                                      "token_type": "Bearer"}, headers=flavor)
        if path == "project/project-id":
            return web.Response(text="tally-project", headers=flavor)
        if path == "universe/universe-domain":
            return web.Response(text="googleapis.com", headers=flavor)
        return web.Response(status=404, text="Not Found", headers=flavor)

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
            return self._json(400, wire_anthropic.anthropic_error("invalid_request_error",
                                                                  "anthropic_version: Field required"))
        if model == "count-tokens":
            if (err := wire_anthropic.check_anthropic({**body, "max_tokens": 1})) is not None:
                return self._json(400, err)
            return self._json(200, {"input_tokens": wire.count_prompt_tokens(body)})
        if "model" in body:
            return self._json(400, wire_anthropic.anthropic_error("invalid_request_error",
                                                        "model: Extra inputs are not permitted"))
        anthropic_body = {**body, "model": model}
        if (err := wire_anthropic.check_anthropic(anthropic_body)) is not None:
            return self._json(400, err)
        sc = wire.parse_scenario(model.partition("@")[0])
        if self.prompt_caching:
            sc = wire.prompt_cache(anthropic_body, "anthropic", sc, self.prompt_cache)
        if sc.kind == "fail":
            resp = self._json(sc.status, google_error(sc.status, f"fake failure {sc.status}") if sc.status == 429
                              else google_error(404, self._not_found(model)) if sc.status == 404
                              else wire_anthropic.anthropic_failure(sc.status, model))
            if sc.status == 429:
                resp.headers["retry-after"] = "2"
            return resp
        if method == "rawPredict":
            if body.get("stream"):
                return self._json(400, google_error(400, "stream: true is for :streamRawPredict"))
            return web.Response(body=wire_anthropic.anthropic_json(anthropic_body, sc), content_type="application/json")
        resp = web.StreamResponse(status=200)
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for i, event in enumerate(wire_anthropic.anthropic_events(anthropic_body, sc)):
            if i == 3 and sc.kind == "cut-stream":
                request.transport.close()  # type: ignore[union-attr]
                return resp
            await resp.write(event)
        await resp.write_eof()
        return resp
