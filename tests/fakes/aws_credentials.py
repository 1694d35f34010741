"""Where botocore's credential chain finds temporary credentials, faked on loopback, each
answering as AWS documents it; every session token it hands out is in `session_tokens`
(give the set to FakeBedrock, which then refuses any other).

    with FakeAwsCredentials() as aws:
        AWS_EC2_METADATA_SERVICE_ENDPOINT=aws.root_url + "/"         # an instance role (IMDSv2)
        AWS_CONTAINER_CREDENTIALS_FULL_URI=aws.root_url + CONTAINER_PATH,
        AWS_CONTAINER_AUTHORIZATION_TOKEN=CONTAINER_TOKEN              # ECS task role, EKS Pod Identity
        AWS_ENDPOINT_URL_STS=aws.root_url, AWS_ROLE_ARN=ROLE_ARN,
        AWS_WEB_IDENTITY_TOKEN_FILE=<a file holding WEB_IDENTITY_TOKEN>  # EKS IRSA

IMDSv2: PUT /latest/api/token (header `X-aws-ec2-metadata-token-ttl-seconds`) gives a session
token; GET /latest/meta-data/iam/security-credentials/ (the role's name) and .../{role} (`{"Code":
"Success", "Type": "AWS-HMAC", "AccessKeyId", "SecretAccessKey", "Token", "Expiration", ...}`)
need it in `X-aws-ec2-metadata-token`, else 401. `role = None`: no role attached, 404.
Container: GET CONTAINER_PATH with `Authorization: CONTAINER_TOKEN` (else 401) answers
`{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}`.
STS: POST / `Action=AssumeRoleWithWebIdentity` (query protocol, unsigned) with the role ARN and
the web identity token answers AssumeRoleWithWebIdentityResponse XML; a wrong token is STS's
400 InvalidIdentityToken.
The keys handed out are FakeBedrock's ACCESS_KEY / SECRET_KEY, so its SigV4 check passes.
"""
from __future__ import annotations

import datetime as dt
import time

from aiohttp import web

from .bedrock import ACCESS_KEY, SECRET_KEY
from .loopback import LoopbackServer

CONTAINER_PATH, CONTAINER_TOKEN = "/v2/credentials/5e2b-task", "pod-identity-token-1"
ROLE_ARN, WEB_IDENTITY_TOKEN = "arn:aws:iam::123456789012:role/bedrock-gateway", "eyJhbGciOiJSUzI1NiJ9.irsa.sig"
_STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"


class FakeAwsCredentials(LoopbackServer):
    """IMDSv2, the container credentials endpoint and STS's AssumeRoleWithWebIdentity."""

    def __init__(self, lifetime_s: int = 3600, role: str | None = "bedrock-gateway") -> None:
        super().__init__()
        self.lifetime_s, self.role = lifetime_s, role
        self.session_tokens: set[str] = set()
        self._imds_tokens: set[str] = set()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_put("/latest/api/token", self._imds_token)
        app.router.add_get("/latest/meta-data/iam/security-credentials/", self._role_name)
        app.router.add_get("/latest/meta-data/iam/security-credentials/{role}", self._role_credentials)
        app.router.add_get(CONTAINER_PATH, self._container)
        app.router.add_post("/", self._sts)
        return app

    def _issue(self) -> tuple[str, str]:
        token = f"FwoGZXIvYXdzEfake{len(self.session_tokens) + 1}"
        self.session_tokens.add(token)
        expires = dt.datetime.fromtimestamp(time.time() + self.lifetime_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, expires

    async def _imds_token(self, request: web.Request) -> web.Response:
        if not request.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return web.Response(status=400)
        token = f"imdsv2-{len(self._imds_tokens) + 1}"
        self._imds_tokens.add(token)
        return web.Response(text=token, headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})

    def _imds_denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("X-aws-ec2-metadata-token") not in self._imds_tokens:
            return web.Response(status=401)
        return None if self.role else web.Response(status=404, text="Not Found")

    async def _role_name(self, request: web.Request) -> web.Response:
        return self._imds_denied(request) or web.Response(text=str(self.role))

    async def _role_credentials(self, request: web.Request) -> web.Response:
        denied = self._imds_denied(request)
        if denied is not None or request.match_info["role"] != self.role:
            return denied or web.Response(status=404, text="Not Found")
        token, expires = self._issue()
        return web.json_response({"Code": "Success", "LastUpdated": expires, "Type": "AWS-HMAC",
                                  "AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY, "Token": token,
                                  "Expiration": expires})

    async def _container(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != CONTAINER_TOKEN:
            return web.json_response({"message": "Unauthorized"}, status=401)
        token, expires = self._issue()
        return web.json_response({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY, "Token": token,
                                  "Expiration": expires, "RoleArn": ROLE_ARN})

    async def _sts(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("RoleArn") != ROLE_ARN:
            return self._sts_error("ValidationError", "Request is missing Action or RoleArn")
        if form.get("WebIdentityToken") != WEB_IDENTITY_TOKEN:
            return self._sts_error("InvalidIdentityToken", "Couldn't retrieve verification key from your identity "
                                   "provider")
        token, expires = self._issue()
        session = str(form.get("RoleSessionName") or "session")
        return web.Response(content_type="text/xml", text=(
            f'<AssumeRoleWithWebIdentityResponse xmlns="{_STS_NS}"><AssumeRoleWithWebIdentityResult>'
            f"<SubjectFromWebIdentityToken>system:serviceaccount:ai:gateway</SubjectFromWebIdentityToken>"
            f"<Audience>sts.amazonaws.com</Audience><AssumedRoleUser>"
            f"<Arn>arn:aws:sts::123456789012:assumed-role/bedrock-gateway/{session}</Arn>"
            f"<AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId></AssumedRoleUser>"
            f"<Credentials><SessionToken>{token}</SessionToken><SecretAccessKey>{SECRET_KEY}</SecretAccessKey>"
            f"<Expiration>{expires}</Expiration><AccessKeyId>{ACCESS_KEY}</AccessKeyId></Credentials>"
            f"<Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com</Provider>"
            f"</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>fake-sts-1</RequestId>"
            f"</ResponseMetadata></AssumeRoleWithWebIdentityResponse>"))

    @staticmethod
    def _sts_error(code: str, message: str) -> web.Response:
        return web.Response(status=400, content_type="text/xml", text=(
            f'<ErrorResponse xmlns="{_STS_NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>fake-sts-err</RequestId></ErrorResponse>"))
