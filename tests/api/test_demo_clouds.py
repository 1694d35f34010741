"""The built-in demo config (`tallygate serve` without `--config`) adds a model of each cloud
provider type whose own SDK's environment variables are set: a real process, the openai SDK as
client, the fake Azure resource answering the Azure model at Azure's price."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openai

from tallygate.core.demo import DEMO_CONFIG
from tallygate.settings import load_config
from tests.fakes.azure import KEY, FakeAzure
from tests.gateway import ADMIN_KEY, Gateway

GPT_4O_MINI = (Decimal("0.15"), Decimal("0.6"))  # genai-prices' azure list, $/Mtok in and out
CLOUD_MODELS = {"azure-gpt-4o-mini", "bedrock-claude-haiku", "gemini-2.5-flash", "vertex-gemini-2.5-flash"}


def test_a_cloud_joins_the_demo_when_its_variables_are_set(tmp_path: Path) -> None:
    with FakeAzure() as azure:
        env = {"AZURE_OPENAI_ENDPOINT": azure.root_url + "/", "AZURE_OPENAI_API_KEY": KEY,
               "AWS_REGION": "eu-west-1", "GEMINI_API_KEY": "demo-gemini-key", "GOOGLE_CLOUD_PROJECT": "demo-project"}
        gw = Gateway(tmp_path, None, env=env).start()
        try:
            with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
                listed = {m.id for m in client.models.list()}
                assert CLOUD_MODELS | set(DEMO_CONFIG["models"]) <= listed
                answer = client.chat.completions.create(model="azure-gpt-4o-mini",
                                                        messages=[{"role": "user", "content": "hello azure"}])
            sent = azure.requests[-1]  # Azure's v1 API, the deployment named in the body
            assert sent["path"] == "/openai/v1/chat/completions" and sent["headers"]["api-key"] == KEY
            assert sent["body"]["model"] == "gpt-4o-mini"
            record = gw.log_record(answer.id)
            u = record["usage"]
            assert Decimal(record["cost"]) == (u["input_tokens"] * GPT_4O_MINI[0]
                                               + u["output_tokens"] * GPT_4O_MINI[1]) / 10**6 > 0
        finally:
            gw.stop()


def test_without_them_the_demo_is_the_mock_alone() -> None:
    config = load_config(None, env={"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com/"})  # no key: not added
    assert set(config.providers) == {"demo"} and set(config.models) == set(DEMO_CONFIG["models"])
