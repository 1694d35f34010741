"""The most input tokens one image can be billed for, per model family (pure).

A limited request's prompt bound (`budget.prompt_bound`) counts each image part at this many
tokens, whatever its bytes (a URL costs as much as inline data), at the highest of its targets:

- OpenAI tile models bill `base + tiles * per_tile` at `detail: "high"`: the image is scaled to
  fit 2048 x 2048, then its short side down to 768 px, so at most 2 x 4 = 8 tiles of 512 px.
  gpt-4o / gpt-4.1 / gpt-4.5 / gpt-4-turbo: 85 + 8 x 170 = 1,445; o1 / o3: 75 + 8 x 150 = 1,275;
  gpt-5: 70 + 8 x 140 = 1,190; gpt-4o-mini, which bills images at gpt-4o's dollar price through
  inflated counts: 2,833 + 8 x 5,667 = 48,169.
- OpenAI patch models bill 32 px patches, at most 1,536, times a multiplier: gpt-4.1-mini and
  gpt-5-mini x 1.62 (2,489), gpt-4.1-nano and gpt-5-nano x 2.46 (3,779), o4-mini x 1.72 (2,642).
  (https://platform.openai.com/docs/guides/images-vision#calculating-costs)
- Claude, on every provider: images are resized to at most 1,568 px on the long edge and about
  1.15 megapixels, billed (w x h) / 750 tokens: 1,600 at most
  (https://docs.claude.com/en/docs/build-with-claude/vision#evaluate-image-size). Claude Opus
  4.7 and later models read images at up to 2,576 px on the long edge and about 3.75 megapixels,
  billed a token per 28 x 28 px patch, the image padded to whole patches: at most 4,914 by that
  rule (a 2,576 x 1,456 screenshot is 4,784), bounded at 5,000. A Claude model whose version
  the name does not give counts as a later one.
- Any other model (a new OpenAI model, a Gemini, an Azure deployment named freely, a
  self-hosted server) is bounded by the dearest known image, `MAX_IMAGE_TOKENS`: no image of a
  model the table does not know is reserved for less than any known model could bill.

`detail: "low"` costs less, but the bound ignores it (`auto` may pick high).
"""

from __future__ import annotations

import re

# The types of the parts that carry one image each, on every API: chat `image_url`, Responses
# `input_image` and `computer_screenshot` (a computer_call_output's screenshot, by URL or file
# id), Messages `image`.
IMAGE_PARTS = frozenset({"image_url", "input_image", "computer_screenshot", "image"})
CLAUDE_IMAGE_TOKENS = 1600
HIGH_RES_CLAUDE_IMAGE_TOKENS = 5000  # Claude Opus 4.7 and later: 3.75 MP in 28 px patches, padding included
# A Claude model's version in any provider's naming (claude-3-5-haiku, claude-opus-4-7,
# anthropic.claude-sonnet-4-20250514-v1:0, claude-opus-4-1@20250805): (major, minor or None).
_CLAUDE_VERSION = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d{1,2})(?!\d))?")
MAX_IMAGE_TOKENS = 2833 + 8 * 5667  # gpt-4o-mini's: the dearest image any known model bills

_DATED = r"(?:-\d{4}-\d{2}-\d{2}|-latest|-preview)?"
_FAMILIES: tuple[tuple[re.Pattern[str], int], ...] = tuple((re.compile(f"(?:{p}){_DATED}"), n) for p, n in (
    (r"gpt-4o-mini", MAX_IMAGE_TOKENS),
    (r"(?:chatgpt-)?gpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo", 85 + 8 * 170),
    (r"o1|o1-pro|o3|o3-pro", 75 + 8 * 150),
    (r"gpt-5|gpt-5-chat", 70 + 8 * 140),
    (r"gpt-4\.1-mini|gpt-5-mini", 2489),  # ceil(1,536 x 1.62)
    (r"gpt-4\.1-nano|gpt-5-nano", 3779),  # ceil(1,536 x 2.46)
    (r"o4-mini", 2642),  # ceil(1,536 x 1.72)
))


def image_tokens(upstream_model: str) -> int:
    """The most input tokens one image sent to `upstream_model` can be billed for."""
    if "claude" in upstream_model:  # anthropic, bedrock (anthropic.claude-...), vertex (claude-...@...)
        version = _CLAUDE_VERSION.search(upstream_model)
        if version is None or (int(version[1]), int(version[2] or 0)) >= (4, 7):
            return HIGH_RES_CLAUDE_IMAGE_TOKENS
        return CLAUDE_IMAGE_TOKENS
    name = upstream_model.rsplit("/", 1)[-1]
    for pattern, tokens in _FAMILIES:
        if pattern.fullmatch(name):
            return tokens
    return MAX_IMAGE_TOKENS
