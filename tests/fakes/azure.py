"""A fake Azure OpenAI resource: OpenAI's bodies and events (served by `FakeUpstream`) on Azure's
URLs, with Azure's `api-key` header and its error bodies.

    with FakeAzure() as az:
        az.root_url                  # the resource endpoint, https://{resource}.openai.azure.com

Routes, as on a real resource:
  POST /openai/v1/chat/completions | /openai/v1/embeddings | /openai/v1/responses    (v1 API)
  POST /openai/deployments/{deployment}/chat/completions?api-version=...            (deployments)
  POST /openai/deployments/{deployment}/embeddings?api-version=...
  POST /openai/responses?api-version=...
A request needs `api-key: <KEY>` (or `Authorization: Bearer <anything>`, an Entra token), else
401 with Azure's message; a wrong key is a 401 too. A deployment route without `api-version` is
Azure's 404 "Resource not found". The body's `model` picks the scenario as in `FakeUpstream` (fail-404
is Azure's DeploymentNotFound; Azure
itself serves the deployment named in the URL; tests check the recorded path).
"""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .upstream import FakeUpstream

KEY = "azure-test-key"


def azure_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


class FakeAzure(FakeUpstream):
    """FakeUpstream's OpenAI handlers behind Azure OpenAI's URLs and `api-key` auth.
    `bearer_ok` (e.g. `FakeEntra.valid`) decides which `Authorization: Bearer` Entra tokens pass."""

    def __init__(self, bearer_ok: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self.bearer_ok = bearer_ok

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_post("/openai/v1/embeddings", self._embeddings)
        app.router.add_post("/openai/v1/responses", self._responses)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._versioned(self._chat))
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._versioned(self._embeddings))
        app.router.add_post("/openai/responses", self._versioned(self._responses))
        app.router.add_route("*", "/{tail:.*}", self._resource_not_found)
        return app

    def _openai_auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if request.headers.get("api-key") == KEY:
            return None
        if scheme.lower() == "bearer" and token.strip():
            if self.bearer_ok is None or self.bearer_ok(request.headers["Authorization"]):
                return None
            return self._openai_response(401, azure_error("401", "Unauthorized. Access token is missing, invalid, "
                                                                 "audience is incorrect, or have expired."))
        return self._openai_response(401, azure_error("401", (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.")))

    def _failure_body(self, status: int, model: str) -> dict:
        """fail-404 is Azure's answer for a deployment the resource does not have."""
        if status == 404:
            return azure_error("DeploymentNotFound", "The API deployment for this resource does not exist. If you "
                                                     "created the deployment within the last 5 minutes, please "
                                                     "wait a moment and try again.")
        return super()._failure_body(status, model)

    async def _resource_not_found(self, request: web.Request) -> web.Response:
        return self._openai_response(404, azure_error("404", "Resource not found"))

    def _versioned(self, handler):  # type: ignore[no-untyped-def]
        async def serve(request: web.Request) -> web.StreamResponse:
            if not request.query.get("api-version"):
                return await self._resource_not_found(request)
            return await handler(request)
        return serve
