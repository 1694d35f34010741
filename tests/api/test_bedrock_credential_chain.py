"""`type: bedrock` with temporary AWS credentials from botocore's chain, in a real `tallygate
serve`: an EC2 instance role (IMDSv2), a container role (ECS task role / EKS Pod Identity) and
EKS IRSA's web identity (STS AssumeRoleWithWebIdentity), each from a fake on loopback at the
address botocore takes from its environment. The fake Bedrock checks the SigV4 signature and
that the session token is one the source issued; the credentials are fetched once for many
requests. An instance without a role is a 502 `upstream_auth_failed` naming no secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.aws_credentials import (
    CONTAINER_PATH,
    CONTAINER_TOKEN,
    ROLE_ARN,
    WEB_IDENTITY_TOKEN,
    FakeAwsCredentials,
)
from tests.fakes.bedrock import REGION, FakeBedrock
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hello role"}]
NOVA = "us.amazon.nova-lite-v1:0"
QUIET = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
         "AWS_METADATA_SERVICE_TIMEOUT": "1", "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1"}


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


def source_env(kind: str, aws: FakeAwsCredentials, folder: Path) -> dict[str, str]:
    if kind == "instance role":
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": aws.root_url + "/"}
    off = {"AWS_EC2_METADATA_DISABLED": "true"}
    if kind == "container role":
        return {**off, "AWS_CONTAINER_CREDENTIALS_FULL_URI": aws.root_url + CONTAINER_PATH,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": CONTAINER_TOKEN}
    (folder / "token").write_text(WEB_IDENTITY_TOKEN)
    return {**off, "AWS_ENDPOINT_URL_STS": aws.root_url, "AWS_ROLE_ARN": ROLE_ARN,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(folder / "token"), "AWS_REGION": REGION}


def start(folder: Path, bedrock: FakeBedrock, env: dict[str, str]) -> Gateway:
    config = {"providers": {"aws": {"type": "bedrock", "region": REGION, "base_url": bedrock.root_url,
                                    "timeout_s": 2}},
              "models": {"nova": {"provider": "aws", "model": NOVA}}}
    return Gateway(folder, config, env={**QUIET, **env}).start()


@pytest.mark.parametrize("kind", ["instance role", "container role", "web identity"])
def test_temporary_credentials_sign_every_request_fetched_once(kind: str, bedrock: FakeBedrock,
                                                              tmp_path: Path) -> None:
    with FakeAwsCredentials() as aws:
        bedrock.session_tokens = aws.session_tokens
        gw = start(tmp_path, bedrock, source_env(kind, aws, tmp_path))
        try:
            bedrock.clear()
            with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
                answer = client.chat.completions.create(model="nova", messages=HELLO)  # type: ignore[arg-type]
                chunks = list(client.chat.completions.create(model="nova", messages=HELLO,  # type: ignore[arg-type]
                                                             stream=True))
                again = client.chat.completions.create(model="nova", messages=HELLO)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == again.choices[0].message.content == "Echo: hello role"
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello role"
            assert len(aws.session_tokens) == 1  # fetched once, reused
            [token] = aws.session_tokens
            assert [r["headers"]["x-amz-security-token"] for r in bedrock.requests] == [token] * 3
            assert all(r["headers"]["authorization"].startswith("AWS4-HMAC-SHA256") for r in bedrock.requests)
            assert gw.log_record(answer.id)["cost"] == gw.log_record(again.id)["cost"] != "0"
        finally:
            gw.stop()
            bedrock.session_tokens = None


def test_an_instance_without_a_role_is_a_502_not_a_500(bedrock: FakeBedrock, tmp_path: Path) -> None:
    with FakeAwsCredentials(role=None) as aws:
        gw = start(tmp_path, bedrock, source_env("instance role", aws, tmp_path))
        try:
            bedrock.clear()
            with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0) as client, \
                    pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="nova", messages=HELLO)  # type: ignore[arg-type]
        finally:
            gw.stop()
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "AWS credentials" in refused.value.body["message"]  # type: ignore[index]
    assert aws.requests and not bedrock.requests
