"""A limited request's images are reserved at what its target model can bill for them: a
gpt-4o-mini image up to 48,169 tokens (its inflated image counts), a Claude image 1,600."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # $0.001 a token
PNG = "data:image/png;base64,iVBORw0KGgo="
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": PNG}}]}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    cfg = standard_config(upstream)
    cfg["models"]["mini-priced"] = {"provider": "openai", "model": "gpt-4o-mini", "pricing": PRICED}
    cfg["models"]["claude-priced"] = {"provider": "anthropic", "model": "claude-sonnet-4-5", "pricing": PRICED}
    gw = InProcessGateway(tmp_path_factory.mktemp("images"), cfg).start()
    yield gw
    gw.stop()


def test_an_image_is_reserved_at_its_targets_image_price(gateway: InProcessGateway, upstream: FakeUpstream) -> None:
    """$20 fits a Claude image ($1.60) but not a gpt-4o-mini one ($48.17 at most)."""
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": "images", "monthly_limit": "20"})
    assert status == 201, rec
    client = openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0)
    upstream.clear()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="mini-priced", messages=IMAGE, max_tokens=10)  # type: ignore[arg-type]
    assert refused.value.status_code == 402 and upstream.requests == []
    served = client.chat.completions.create(model="claude-priced", messages=IMAGE, max_tokens=10)  # type: ignore[arg-type]
    assert served.choices[0].message.content
