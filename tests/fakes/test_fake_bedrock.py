"""The fake Bedrock Runtime answers boto3's own `bedrock-runtime` client (SigV4-signed, event
stream parsed by botocore), and refuses a wrong signature with 403 as AWS does."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.fakes.bedrock import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


def client(fake: FakeBedrock, secret: str = SECRET_KEY):  # type: ignore[no-untyped-def]
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=fake.root_url,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret)


def test_converse_and_converse_stream_agree(bedrock: FakeBedrock) -> None:
    c = client(bedrock)
    ask = {"modelId": MODEL, "messages": [{"role": "user", "content": [{"text": "hello bedrock"}]}],
           "system": [{"text": "be brief"}]}
    whole = c.converse(**ask)
    assert whole["output"]["message"]["content"] == [{"text": "Echo: hello bedrock"}]
    events = list(c.converse_stream(**ask)["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Echo: hello bedrock"
    assert events[-1]["metadata"]["usage"] == whole["usage"]
    assert bedrock.requests[-1]["path"] == f"/model/{MODEL}/converse-stream"


def test_tool_use_and_cache_tokens(bedrock: FakeBedrock) -> None:
    resp = client(bedrock).converse(
        modelId="us.cached-40", messages=[{"role": "user", "content": [{"text": "find"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "search", "inputSchema": {"json": {"type": "object"}}}}]})
    assert resp["stopReason"] == "tool_use"
    assert resp["output"]["message"]["content"][0]["toolUse"]["input"] == {"query": "Echo: find"}
    assert resp["usage"]["cacheReadInputTokens"] == 40


def test_wrong_signature_is_403_and_throttling_is_aws_shaped(bedrock: FakeBedrock) -> None:
    with pytest.raises(ClientError) as denied:
        client(bedrock, secret="not-the-secret").converse(
            modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert denied.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as throttled:
        client(bedrock).converse(modelId="fail-429", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(Exception, match="throttlingException|Too many tokens"):
        list(client(bedrock).converse_stream(modelId="stream-error",
                                             messages=[{"role": "user", "content": [{"text": "a b c d e"}]}])["stream"])


def test_invoke_model_with_the_anthropic_body(bedrock: FakeBedrock) -> None:
    import json

    c = client(bedrock)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hello claude"}]})
    message = json.loads(c.invoke_model(modelId=MODEL, body=body)["body"].read())
    assert message["content"][0]["text"] == "Echo: hello claude"
    stream = c.invoke_model_with_response_stream(modelId=MODEL, body=body)["body"]
    events = [json.loads(e["chunk"]["bytes"]) for e in stream]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"


def test_embeddings_and_cache_points_as_boto3_sends_them(bedrock: FakeBedrock) -> None:
    import json

    c = client(bedrock)
    titan = c.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                           body=json.dumps({"inputText": "hello", "dimensions": 256}))
    answer = json.loads(titan["body"].read())
    assert len(answer["embedding"]) == 256 and answer["inputTextTokenCount"] == 1
    cohere = c.invoke_model(modelId="cohere.embed-english-v3",
                            body=json.dumps({"texts": ["hello there", "bye"], "input_type": "search_query"}))
    assert len(json.loads(cohere["body"].read())["embeddings"]) == 2
    assert cohere["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "3"
    system = [{"text": "A long, stable system prompt. " * 10}, {"cachePoint": {"type": "default"}}]
    ask = {"modelId": MODEL, "system": system,
           "messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    first, second = c.converse(**ask)["usage"], c.converse(**ask)["usage"]
    assert first["cacheWriteInputTokens"] == second["cacheReadInputTokens"] == 75
    assert first["inputTokens"] == second["inputTokens"] == first["totalTokens"] - 75 - first["outputTokens"]


def test_count_tokens_answers_boto3_for_invoke_model_and_converse_bodies(bedrock: FakeBedrock) -> None:
    c = client(bedrock)
    body = b'{"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1, "system": "abcdefgh", ' \
           b'"messages": [{"role": "user", "content": "12345678"}]}'
    assert c.count_tokens(modelId=MODEL, input={"invokeModel": {"body": body}})["inputTokens"] == 4
    converse = {"messages": [{"role": "user", "content": [{"text": "12345678"}]}]}
    assert c.count_tokens(modelId=MODEL, input={"converse": converse})["inputTokens"] == 2
    with pytest.raises(ClientError, match="doesn't support counting tokens"):
        c.count_tokens(modelId="us." + MODEL, input={"converse": converse})
