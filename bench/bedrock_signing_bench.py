"""CPU per Bedrock request spent translating a chat body to Converse and SigV4-signing it.

    .venv/bin/python bench/bedrock_signing_bench.py [--n 5000]

No network: static fake credentials from the environment this script sets for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.update(AWS_ACCESS_KEY_ID="AKIAFAKEBEDROCK00001", AWS_SECRET_ACCESS_KEY="fake-secret",
                  AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
                  AWS_SHARED_CREDENTIALS_FILE="/nonexistent")

import orjson  # noqa: E402

from tallygate.providers.bedrock import BedrockProvider  # noqa: E402
from tallygate.providers.bedrock_translate import to_converse  # noqa: E402
from tallygate.providers.http import HttpClient  # noqa: E402
from tallygate.settings import ProviderConfig  # noqa: E402

BODY = {"model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "max_tokens": 100,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello bedrock " * 20}]}


async def run(n: int) -> float:
    provider = BedrockProvider("b", ProviderConfig(type="bedrock", region="us-east-1"), HttpClient())

    async def one() -> None:
        url, data = provider._url(BODY["model"], "converse"), orjson.dumps(to_converse(BODY))
        await provider._signed(url, data, "application/json")

    await one()
    began = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - began) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    print(f"bedrock translate + SigV4 sign: {asyncio.run(run(n)):.1f} us CPU per request ({n} requests)")


if __name__ == "__main__":
    main()
