"""A chat stream translated from another API (Anthropic here) carries its cache writes in the
usage chunk, so the streamed answer costs what the JSON answer costs."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, InProcessGateway

PRICED = {"input_per_mtok": "3", "output_per_mtok": "15", "cached_input_per_mtok": "0.3",
          "cache_write_per_mtok": "3.75"}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    cfg = standard_config(upstream)
    cfg["models"]["claude-cachewrite"] = {"provider": "anthropic", "model": "cachewrite-30", "pricing": PRICED}
    gw = InProcessGateway(tmp_path_factory.mktemp("cachewrite"), cfg).start()
    yield gw
    gw.stop()


def test_streamed_chat_with_cache_writes_costs_what_json_costs(gateway: InProcessGateway) -> None:
    messages = [{"role": "user", "content": "write the cache"}]
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        whole = client.chat.completions.create(model="claude-cachewrite", messages=messages)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(model="claude-cachewrite", messages=messages,  # type: ignore[arg-type]
                                                     stream=True, stream_options={"include_usage": True}))
    json_record, stream_record = gateway.log_record(whole.id), gateway.log_record(chunks[0].id)
    assert stream_record["usage"]["cache_write_tokens"] == json_record["usage"]["cache_write_tokens"] == 30
    assert Decimal(stream_record["cost"]) == Decimal(json_record["cost"])
    assert chunks[-1].usage is not None and chunks[-1].usage.cost == whole.usage.cost  # type: ignore[union-attr, attr-defined]
