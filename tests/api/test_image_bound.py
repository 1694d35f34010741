"""A limited request's images are reserved at what its target model can bill for them: a
gpt-4o-mini image up to 48,169 tokens (its inflated image counts), a Claude image 1,600."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

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
    cfg["models"]["opus-priced"] = {"provider": "anthropic", "model": "claude-opus-4-7", "pricing": PRICED}
    cfg["models"]["cut-priced"] = {"provider": "openai", "model": "cut-stream", "pricing": PRICED}
    gw = InProcessGateway(tmp_path_factory.mktemp("images"), cfg).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize(("limit", "refused_model"), [("20", "mini-priced"), ("4", "opus-priced")],
                         ids=["gpt-4o-mini image", "Opus 4.7 high-resolution image"])
def test_an_image_is_reserved_at_its_targets_image_price(gateway: InProcessGateway, upstream: FakeUpstream,
                                                         limit: str, refused_model: str) -> None:
    """A Claude Sonnet 4.5 image fits ($1.60) where a gpt-4o-mini one ($48.17 at most) does not fit
    $20, nor an Opus 4.7 one $4: Claude Opus 4.7 and later read an image at up to 2,576 px a side
    (about 3.75 megapixels, 28 px patches: a 2,576 x 1,456 screenshot is 4,784 tokens, $5 at most),
    not the 1,600 tokens of earlier Claude models (before, reserved at $1.60 and served)."""
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": "images", "monthly_limit": limit})
    assert status == 201, rec
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        upstream.clear()
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=refused_model, messages=IMAGE, max_tokens=10)  # type: ignore[arg-type]
        assert refused.value.status_code == 402 and upstream.requests == []
        served = client.chat.completions.create(model="claude-priced", messages=IMAGE, max_tokens=10)  # type: ignore[arg-type]
    assert served.choices[0].message.content


def test_a_stream_cut_short_prices_its_image_as_an_image_not_as_base64(gateway: InProcessGateway) -> None:
    """A chat stream the provider cut midway is priced by estimate, its image at an image's
    tokens as it was reserved, not a token per four characters of its base64: a 400 kB photo
    was 100,000 tokens ($100), past the key's $60 limit its worst case ($48.17) had fit in."""
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": "cut-image", "monthly_limit": "60"})
    assert status == 201, rec
    photo = "data:image/jpeg;base64," + "A" * 400_000
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                             {"type": "image_url", "image_url": {"url": photo}}]}]
    received = []
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        with pytest.raises(openai.APIError):
            for chunk in client.chat.completions.create(model="cut-priced", messages=messages,  # type: ignore[arg-type]
                                                        max_tokens=10, stream=True):
                received.append(chunk)
    assert received, "the first chunks should have reached the client"
    record = gateway.log_record(received[0].id)
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert 1600 <= record["usage"]["input_tokens"] < 2000, record["usage"]  # the text, and one image
    deadline = time.monotonic() + 10
    while (me := gateway.get("/v1/key", key=rec["key"])[1])["monthly_reserved"] != "0":
        assert time.monotonic() < deadline, me
        time.sleep(0.05)
    assert Decimal(me["monthly_spend"]) == Decimal(record["cost"]) <= Decimal("60")
