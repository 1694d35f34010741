"""Tag validation and the prefixes a request counts under."""

from __future__ import annotations

import pytest

from tallygate.core.tagpath import prefixes
from tallygate.errors import BadTag
from tallygate.pipeline.tags import parse_tags


def test_request_counts_once_under_each_shared_prefix() -> None:
    assert prefixes(("US/California/SF", "US/NYC")) == ["US", "US/California", "US/California/SF", "US/NYC"]


def test_flat_and_path_tags_mix() -> None:
    assert prefixes(("production", "team/feature/test")) == [
        "production", "team", "team/feature", "team/feature/test"]


def test_tag_that_is_a_prefix_of_another_is_not_repeated() -> None:
    assert prefixes(("US", "US/NYC")) == ["US", "US/NYC"]


def test_header_tags_are_percent_decoded_and_merged_after_body_tags() -> None:
    assert parse_tags(["a"], "b%2Fc, d%2Ce ,a") == ("a", "b/c", "d,e")


def test_invalid_percent_encoding_is_refused() -> None:
    with pytest.raises(BadTag, match="not valid percent-encoded UTF-8"):
        parse_tags(None, "%ff")


def test_unicode_and_inner_spaces_are_kept_verbatim() -> None:
    assert parse_tags(["équipe/ventes Europe"], None) == ("équipe/ventes Europe",)


def test_nothing_is_silently_rewritten() -> None:
    with pytest.raises(BadTag):
        parse_tags([" padded"], None)
    with pytest.raises(BadTag):
        parse_tags(["a\x7f"], None)
