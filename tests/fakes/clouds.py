"""Every upstream fake at once, with the gateway provider config that points at each: a gateway
whose fallback policies and test matrices mix provider types.

    with FakeClouds(folder) as clouds:
        clouds.providers()    # {"oa", "an", "az", "br", "brc", "ge", "vx", "vxc", "groq", "deepseek"} -> config
        clouds.env            # the AWS credentials the Bedrock fake verifies SigV4 with
        clouds.bedrock ...    # each fake, to read what the gateway sent it

`br` signs with SigV4 from the environment's credentials (`env`), `brc` is the same with
`anthropic_messages: true` (InvokeModel for /v1/messages); `vx` and `vxc` are Vertex AI's Gemini and
Claude publishers behind a service-account token from the Vertex fake; `groq` and `deepseek` are
those presets of `type: openai` on the OpenAI fake.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .azure import KEY as AZURE_KEY
from .azure import FakeAzure
from .bedrock import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock
from .gemini import KEY as GEMINI_KEY
from .gemini import FakeGemini
from .upstream import FakeUpstream
from .vertex import FakeVertex

AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


class FakeClouds(contextlib.ExitStack):
    """The OpenAI/Anthropic, Azure, Bedrock, Gemini and Vertex fakes, started together."""

    env = AWS_ENV

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __enter__(self) -> FakeClouds:
        super().__enter__()
        self.upstream = self.enter_context(FakeUpstream())
        self.azure = self.enter_context(FakeAzure())
        self.bedrock = self.enter_context(FakeBedrock())
        self.gemini = self.enter_context(FakeGemini())
        self.vertex = self.enter_context(FakeVertex())
        return self

    def fakes(self) -> list[FakeUpstream]:
        return [self.upstream, self.azure, self.bedrock, self.gemini, self.vertex]

    def clear(self) -> None:
        for fake in self.fakes():
            fake.clear()

    def providers(self) -> dict[str, dict]:
        """A provider of each type (and preset), named as the module docstring says."""
        sa = str(self.vertex.service_account_file(self.folder))
        vertex = {"type": "vertex", "project": "tally-project", "location": "us-central1",
                  "base_url": self.vertex.root_url, "credentials_file": sa, "timeout_s": 5}
        bedrock = {"type": "bedrock", "region": REGION, "base_url": self.bedrock.root_url, "timeout_s": 5}
        return {
            "oa": {"type": "openai", "base_url": self.upstream.base_url, "api_key": "sk-up"},
            "an": {"type": "anthropic", "base_url": self.upstream.root_url, "api_key": "sk-ant-up"},
            "az": {"type": "azure", "base_url": self.azure.root_url + "/openai/v1", "api_key": AZURE_KEY,
                   "timeout_s": 5},
            "br": bedrock,
            "brc": {**bedrock, "anthropic_messages": True},
            "ge": {"type": "gemini", "base_url": self.gemini.root_url, "api_key": GEMINI_KEY, "timeout_s": 5},
            "vx": vertex,
            "vxc": {**vertex, "publisher": "anthropic"},
            "groq": {"type": "openai", "preset": "groq", "base_url": self.upstream.base_url, "api_key": "gsk-up"},
            "deepseek": {"type": "openai", "preset": "deepseek", "base_url": self.upstream.base_url, "api_key": "sk"},
        }
