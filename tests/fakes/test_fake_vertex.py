"""The fake Vertex AI answers Google's `google-genai` client in Vertex mode, with a token its own
token endpoint issued for a signed service-account JWT (google-auth), and refuses other tokens."""

from __future__ import annotations

from pathlib import Path

from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from tests.fakes.vertex import FakeVertex

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def test_genai_vertex_client_gets_a_token_and_an_answer(tmp_path: Path) -> None:
    with FakeVertex() as vertex:
        creds = service_account.Credentials.from_service_account_file(
            str(vertex.service_account_file(tmp_path)), scopes=SCOPES)
        client = genai.Client(vertexai=True, project="tally-project", location="europe-west4", credentials=creds,
                              http_options=types.HttpOptions(base_url=vertex.root_url))
        answer = client.models.generate_content(model="gemini-2.5-flash", contents="hello vertex")
        assert answer.text == "Echo: hello vertex"
        assert [r["path"] for r in vertex.requests][0] == "/token"
        assert vertex.requests[-1]["path"].endswith(
            "/projects/tally-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent")


def test_unknown_token_and_forged_jwt_are_refused(tmp_path: Path) -> None:
    with FakeVertex() as vertex, FakeVertex() as other:
        forged = service_account.Credentials.from_service_account_file(  # signed by another key
            str(other.service_account_file(tmp_path)), scopes=SCOPES)
        forged._token_uri = vertex.root_url + "/token"
        client = genai.Client(vertexai=True, project="p", location="us-central1", credentials=forged,
                              http_options=types.HttpOptions(base_url=vertex.root_url))
        try:
            client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        except Exception as exc:  # google-auth's RefreshError: invalid_grant
            assert "invalid_grant" in str(exc)
        else:
            raise AssertionError("a JWT signed by another key got a token")
        bare = genai.Client(vertexai=True, project="p", location="us-central1", credentials=_static("ya29.not-issued"),
                            http_options=types.HttpOptions(base_url=vertex.root_url))
        try:
            bare.models.generate_content(model="gemini-2.5-flash", contents="hi")
        except errors.ClientError as exc:
            assert exc.code == 401
        else:
            raise AssertionError("a token the fake never issued was accepted")


def _static(token: str):  # type: ignore[no-untyped-def]
    from google.oauth2.credentials import Credentials

    return Credentials(token=token)


def test_anthropic_vertex_client_speaks_to_the_claude_routes(tmp_path: Path) -> None:
    from anthropic import AnthropicVertex

    with FakeVertex() as vertex:
        creds = service_account.Credentials.from_service_account_file(
            str(vertex.service_account_file(tmp_path)), scopes=SCOPES)
        client = AnthropicVertex(region="europe-west4", project_id="tally-project", credentials=creds,
                                 base_url=vertex.root_url + "/v1", max_retries=0)
        ask = {"model": "claude-haiku-4-5@20251001", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hello claude"}]}
        message = client.messages.create(**ask)  # type: ignore[arg-type]
        with client.messages.stream(**ask) as stream:  # type: ignore[arg-type]
            final = stream.get_final_message()
        counted = client.messages.count_tokens(model=ask["model"], messages=ask["messages"])  # type: ignore[arg-type]
        assert message.content[0].text == final.content[0].text == "Echo: hello claude"  # type: ignore[union-attr]
        assert final.usage.output_tokens == message.usage.output_tokens > 0 and counted.input_tokens > 0
        paths = [r["path"].rsplit("/", 1)[-1] for r in vertex.requests if r["path"] != "/token"]
        assert paths == ["claude-haiku-4-5@20251001:rawPredict", "claude-haiku-4-5@20251001:streamRawPredict",
                         "count-tokens:rawPredict"]
        assert all("model" not in r["body"] for r in vertex.requests[1:3])
        assert all(isinstance(r["body"]["anthropic_version"], str) for r in vertex.requests[1:])


def test_text_embeddings_on_predict_answer_genai_in_vertex_mode(tmp_path: Path) -> None:
    with FakeVertex() as vertex:
        creds = service_account.Credentials.from_service_account_file(
            str(vertex.service_account_file(tmp_path)), scopes=SCOPES)
        client = genai.Client(vertexai=True, project="tally-project", location="europe-west4", credentials=creds,
                              http_options=types.HttpOptions(base_url=vertex.root_url))
        answer = client.models.embed_content(model="text-embedding-005", contents=["hello there", "bye"],
                                             config=types.EmbedContentConfig(output_dimensionality=8))
        assert answer.embeddings is not None and [len(e.values or []) for e in answer.embeddings] == [8, 8]
        assert [e.statistics.token_count for e in answer.embeddings if e.statistics] == [2, 1]
        assert vertex.requests[-1]["path"].endswith("/publishers/google/models/text-embedding-005:predict")
