"""A fake Microsoft Entra ID token service (and Azure's managed-identity endpoint), over TLS.

    with FakeEntra(tmp_path) as entra:
        entra.root_url      # https://127.0.0.1:PORT: the authority host (azure-identity wants https)
        entra.ca_file       # its self-signed certificate, for SSL_CERT_FILE
        entra.tokens        # access token -> expiry (epoch seconds) of every token issued

POST /{tenant}/oauth2/v2.0/token (form, as Entra's v2 endpoint): `grant_type=client_credentials`,
`client_id`, `scope` and either `client_secret` (a client-secret credential) or
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` + `client_assertion`
(workload identity: the federated token the file holds). Answers `{"token_type": "Bearer",
"expires_in", "ext_expires_in", "access_token"}`, or Entra's 401 `invalid_client` (AADSTS7000215)
for a wrong secret or assertion, 400 `invalid_scope` for another scope.
GET /msi/token (App Service's managed identity, IDENTITY_ENDPOINT): `api-version=2019-08-01`,
`resource`, header `X-IDENTITY-HEADER` = IDENTITY_HEADER; answers `{"access_token", "expires_on"
(epoch seconds, a string), "resource", "token_type", "client_id"}`.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import time
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .loopback import LoopbackServer

TENANT, CLIENT_ID, SECRET = "72f988bf-86f1-41af-91ab-2d7cd011db47", "0a1b2c3d-app", "entra-test-secret"
FEDERATED = "eyJhbGciOiJSUzI1NiJ9.fake-kubernetes-service-account-token.sig"
IDENTITY_HEADER = "fake-identity-header"
SCOPE = "https://cognitiveservices.azure.com/.default"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: two fakes' certificates in one CA file must not look like one issuer.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fake-entra-{x509.random_serial_number()}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "entra-cert.pem", folder / "entra-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeEntra(LoopbackServer):
    """Entra's token endpoint and App Service's managed-identity endpoint."""

    def __init__(self, folder: Path, token_lifetime_s: int = 3600) -> None:
        super().__init__()
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}
        self.ca_file, key = self_signed(folder)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(self.ca_file, key)

    def valid(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme == "Bearer" and self.tokens.get(token, 0) > time.time()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/msi/token", self._managed_identity)
        return app

    def _issue(self) -> tuple[str, float]:
        token = f"entra-access-{len(self.tokens) + 1}"
        expires = time.time() + self.token_lifetime_s
        self.tokens[token] = expires
        return token, expires

    @staticmethod
    def _error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description, "error_codes": [7000215],
                                  "timestamp": "2026-12-06 20:00:00Z", "trace_id": "fake", "correlation_id": "fake"},
                                 status=status)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.match_info["tenant"] != TENANT or form.get("client_id") != CLIENT_ID:
            return self._error(400, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
        if form.get("grant_type") != "client_credentials":
            return self._error(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
        if form.get("scope") != SCOPE:
            return self._error(400, "invalid_scope", "AADSTS70011: The provided value for scope is not valid.")
        secret_ok = form.get("client_secret") == SECRET
        assertion_ok = (form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                        and form.get("client_assertion") == FEDERATED)
        if not (secret_ok or assertion_ok):
            return self._error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        token, _ = self._issue()
        return web.json_response({"token_type": "Bearer", "expires_in": self.token_lifetime_s,
                                  "ext_expires_in": self.token_lifetime_s, "access_token": token})

    async def _managed_identity(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"statusCode": 400, "message": "No X-IDENTITY-HEADER"}, status=400)
        if request.query.get("api-version") != "2019-08-01" or not request.query.get("resource"):
            return web.json_response({"statusCode": 400, "message": "bad query"}, status=400)
        token, expires = self._issue()
        return web.Response(body=json.dumps({"access_token": token, "expires_on": str(int(expires)),
                                             "resource": request.query["resource"], "token_type": "Bearer",
                                             "client_id": CLIENT_ID}), content_type="application/json")
