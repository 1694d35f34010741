"""The shape of `tallygate.yaml`: pydantic models that type and validate it (`GatewayConfig` and
what it holds), and `ConfigError`, whose message names the offending field. Reading the file and
the environment is `tallygate.settings`'s (its `__init__`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tallygate.core.addresses import is_ip, is_public
from tallygate.core.zones import zone


class ConfigError(Exception):
    """The config file or the environment is wrong; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PricingOverride(_Strict):
    """USD per million tokens; strings keep them exact."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal = Decimal(0)
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None  # default: input (Claude: 1.25 x input, Anthropic's)
    cache_write_1h_per_mtok: Decimal | None = None  # Anthropic's 1-hour TTL; default: cache_write (Claude: 8/5 of it)
    # USD per use of a provider-run tool (pipeline/tool_fees.py); default: the model's list price
    web_search_per_call: Decimal | None = None
    file_search_per_call: Decimal | None = None
    code_session_per_call: Decimal | None = None  # per 1 GB code container

    @field_validator("*")
    @classmethod
    def _non_negative(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and (not v.is_finite() or v < 0):
            raise ValueError("must be a non-negative number")
        return v


# `type: openai` presets: a known OpenAI-compatible service -> (its base URL, the genai-prices
# provider that prices its models). Self-hosted servers (ollama, vllm) have no list price.
OPENAI_PRESETS: dict[str, tuple[str, str]] = {
    "groq": ("https://api.groq.com/openai/v1", "groq"),
    "together": ("https://api.together.xyz/v1", "together"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "fireworks"),
    "deepseek": ("https://api.deepseek.com/v1", "deepseek"),
    "xai": ("https://api.x.ai/v1", "x-ai"),
    "mistral": ("https://api.mistral.ai/v1", "mistral"),
    "openrouter": ("https://openrouter.ai/api/v1", "openrouter"),
    "ollama": ("http://localhost:11434/v1", "self-hosted"),
    "vllm": ("http://localhost:8000/v1", "self-hosted"),
}
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}


class AzureEntraConfig(_Strict):
    """A Microsoft Entra ID credential (azure-identity) whose tokens authenticate `type: azure`.
    A field left out is read by azure-identity from its usual environment variables
    (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, IDENTITY_ENDPOINT ...)."""

    credential: Literal["client_secret", "managed_identity", "workload_identity"]
    tenant_id: str | None = None
    client_id: str | None = None  # managed identity: a user-assigned identity's client id
    client_secret: str | None = None  # client_secret only (`env:NAME`)
    token_file: str | None = None  # workload_identity only: the federated (Kubernetes) token file
    authority_host: str | None = None  # default https://login.microsoftonline.com (sovereign clouds differ)
    scope: str = "https://cognitiveservices.azure.com/.default"

    @model_validator(mode="after")
    def _fields_of_the_credential(self) -> AzureEntraConfig:
        if self.credential == "client_secret" and not (self.tenant_id and self.client_id and self.client_secret):
            raise ValueError("credential client_secret needs tenant_id, client_id and client_secret")
        if self.client_secret is not None and self.credential != "client_secret":
            raise ValueError("client_secret applies to credential: client_secret only")
        if self.token_file is not None and self.credential != "workload_identity":
            raise ValueError("token_file applies to credential: workload_identity only")
        if self.authority_host is not None and not self.authority_host.startswith("https://"):
            raise ValueError("authority_host must be an https:// URL (azure-identity refuses others)")
        return self


class ProviderConfig(_Strict):
    type: Literal["openai", "anthropic", "azure", "bedrock", "gemini", "vertex", "mock"]
    preset: Literal["groq", "together", "fireworks", "deepseek", "xai", "mistral", "openrouter",
                    "ollama", "vllm"] | None = None  # type: openai only
    base_url: str | None = None
    api_key: str | None = None
    api_version: str | None = None  # azure only: use the deployment URLs with this `api-version`
    entra: AzureEntraConfig | None = None  # azure only: Microsoft Entra tokens instead of api_key
    project: str | None = None  # vertex only (required): the Google Cloud project id
    location: str | None = None  # vertex only: the region (default us-central1) or `global`
    credentials_file: str | None = None  # vertex only: a service-account JSON; default: ADC
    publisher: Literal["google", "anthropic"] | None = None  # vertex only: Gemini (default) or Claude
    region: str | None = None  # bedrock only (required): the AWS region, e.g. us-east-1
    anthropic_messages: bool = False  # bedrock only: /v1/messages natively via InvokeModel (Claude)
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0  # mock only: time before the first byte
    headers: dict[str, str] = {}

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @field_validator("headers")
    @classmethod
    def _header_values(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not name or any(c in name for c in " :\r\n") or any(c in value for c in "\r\n\x00"):
                raise ValueError(f"header {name!r} has a name or value that cannot be sent")
        return v

    @model_validator(mode="after")
    def _mock_only(self) -> ProviderConfig:
        if self.latency_ms and self.type != "mock":
            raise ValueError("latency_ms applies to type: mock only")
        if self.preset and self.type != "openai":
            raise ValueError("preset applies to type: openai only")
        if self.api_version is not None and self.type != "azure":
            raise ValueError("api_version applies to type: azure only")
        if self.entra is not None and self.type != "azure":
            raise ValueError("entra applies to type: azure only")
        if self.entra is not None and self.api_key:
            raise ValueError("give api_key or entra, not both")
        for name in ("project", "location", "credentials_file", "publisher"):
            if getattr(self, name) is not None and self.type != "vertex":
                raise ValueError(f"{name} applies to type: vertex only")
        if self.type == "vertex" and not self.project:
            raise ValueError("project is required for type: vertex (the Google Cloud project id)")
        if self.type == "vertex" and self.api_key:
            raise ValueError("api_key does not apply to type: vertex (it uses Google credentials)")
        if self.region is not None and self.type != "bedrock":
            raise ValueError("region applies to type: bedrock only")
        if self.anthropic_messages and self.type != "bedrock":
            raise ValueError("anthropic_messages applies to type: bedrock only")
        if self.type == "bedrock" and not self.region:
            raise ValueError("region is required for type: bedrock (the AWS region, e.g. us-east-1)")
        if self.type == "azure" and not self.base_url:
            raise ValueError("base_url is required for type: azure (https://<resource>.openai.azure.com)")
        return self

    def price_list(self) -> str:
        """Whose prices apply to this provider's models: a genai-prices provider id (the
        preset's, else the type's), `self-hosted` (no list price) or `mock` (any list)."""
        return OPENAI_PRESETS[self.preset][1] if self.preset else self.type


class ModelConfig(_Strict):
    provider: str
    model: str
    pricing: PricingOverride | None = None
    # What the model does: chat (chat, messages, responses) or embeddings. Default: embeddings
    # when the upstream model's name says "embed" (text-embedding-3-small, nomic-embed-text ...).
    kind: Literal["chat", "embeddings"] | None = None
    # Input tokens one request to the model can hold (default: genai-prices' figure). Bounds what
    # provider-run tools' results can add to a limited request (`pipeline/tool_fees.py`).
    context_window: Annotated[int, Field(ge=1)] | None = None

    def model_kind(self) -> str:
        return self.kind or ("embeddings" if "embed" in self.model.lower() else "chat")


class CooldownConfig(_Strict):
    """After `failures` consecutive failures a target sits out `seconds`, then one probe may try it."""

    failures: Annotated[int, Field(ge=1)] = 3
    seconds: Annotated[float, Field(gt=0)] = 30.0


class _PolicyBase(_Strict):
    """What every routing strategy shares: per-attempt timeout, retry rounds, cooldown."""

    timeout_s: Annotated[float, Field(gt=0)] | None = None   # per attempt; None: the provider's own
    retries: Annotated[int, Field(ge=0, le=10)] = 0          # extra rounds over the targets
    backoff_s: Annotated[float, Field(ge=0)] = 0.25          # before round k: backoff_s * 2^(k-1)
    max_wait_s: Annotated[float, Field(ge=0)] = 5.0          # a longer wait (retry-after) ends retries
    cooldown: CooldownConfig = CooldownConfig()


class FallbackPolicyConfig(_PolicyBase):
    strategy: Literal["fallback"]
    targets: Annotated[list[str], Field(min_length=1)]


class WeightedTarget(_Strict):
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0


class WeightedPolicyConfig(_PolicyBase):
    strategy: Literal["weighted"]
    targets: Annotated[list[WeightedTarget], Field(min_length=1)]

    @field_validator("targets", mode="before")
    @classmethod
    def _bare_names(cls, v: object) -> object:
        """A bare model name is a target of weight 1."""
        return [{"model": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v


class LatencyPolicyConfig(_PolicyBase):
    strategy: Literal["latency"]
    targets: Annotated[list[str], Field(min_length=1)]
    explore: Annotated[float, Field(ge=0, le=1)] = 0.05     # share of requests sent to another target


PolicyConfig = Annotated[FallbackPolicyConfig | WeightedPolicyConfig | LatencyPolicyConfig,
                         Field(discriminator="strategy")]
STRATEGIES = ("fallback", "weighted", "latency")


def target_names(policy: FallbackPolicyConfig | WeightedPolicyConfig | LatencyPolicyConfig) -> list[str]:
    """The model names a policy routes to, in config order."""
    return [t.model if isinstance(t, WeightedTarget) else t for t in policy.targets]


ALERT_KINDS = ("threshold", "projected_overrun", "spend_spike", "error_rate")
AlertKind = Literal["threshold", "projected_overrun", "spend_spike", "error_rate"]
Percent = Annotated[int, Field(ge=1, le=1000)]


class WebhookConfig(_Strict):
    """One receiver of alert events: signed with `secret`, retried for up to `retry_for_s`.

    The URL must reach a public address unless `allow_private` (docs/alerts.md says why)."""

    url: str
    secret: str
    kinds: list[AlertKind] = ["threshold", "projected_overrun", "spend_spike", "error_rate"]
    format: Literal["json", "slack"] = "json"
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    retry_for_s: Annotated[float, Field(ge=0)] = 3600.0
    allow_private: bool = False  # may resolve to loopback, private or link-local addresses

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@); the receiver checks the "
                             "Tallygate-Signature header instead")
        return v

    @model_validator(mode="after")
    def _public_ip(self) -> WebhookConfig:
        host = urlsplit(self.url).hostname or ""
        if not self.allow_private and is_ip(host) and not is_public(host):
            raise ValueError(f"url: {host} is not a public address (loopback, private, link-local or "
                             "metadata range); set allow_private: true for a receiver on your own network")
        return self


class SpikeConfig(_Strict):
    """Spend of the last hour of a group against its own trailing baseline (see observe/spikes.py)."""

    group_by: list[str] = []  # 'key', 'label.<name>', 'tag_level.<n>'
    factor: Annotated[Decimal, Field(gt=1)] = Decimal(3)
    min_usd: Annotated[Decimal, Field(ge=0)] = Decimal("1.00")
    baseline_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 24
    min_baseline_hours: Annotated[int, Field(ge=1)] = 3

    @field_validator("group_by")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            kind, _, arg = g.partition(".")
            ok = (g == "key" or (kind == "label" and bool(arg))
                  or (kind == "tag_level" and arg.isdigit() and 1 <= int(arg) <= 8))
            if not ok:
                raise ValueError(f"{g!r}: a group is 'key', 'label.<name>' or 'tag_level.<1-8>'")
        return v


class ErrorRateConfig(_Strict):
    """Error rate of each model and provider over `window_s` against its trailing baseline."""

    group_by: list[Literal["model", "provider"]] = ["model", "provider"]
    factor: Annotated[Decimal, Field(gt=1)] = Decimal(3)
    min_rate: Annotated[Decimal, Field(ge=0, le=1)] = Decimal("0.05")
    min_requests: Annotated[int, Field(ge=1)] = 20
    window_s: Annotated[int, Field(ge=60)] = 300
    baseline_windows: Annotated[int, Field(ge=1)] = 12


class AlertsConfig(_Strict):
    """`alerts:` in tallygate.yaml."""

    enabled: bool = True
    thresholds: list[Percent] = [50, 80, 100]
    scope_thresholds: dict[str, list[Percent]] = {}  # by key id or 'budget:<id>': its own list
    webhooks: list[WebhookConfig] = []
    spike: SpikeConfig = SpikeConfig()
    error_rate: ErrorRateConfig | None = ErrorRateConfig()
    evaluate_every_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class MetricsConfig(_Strict):
    """`metrics:` in tallygate.yaml: Prometheus `/metrics`."""

    enabled: bool = True
    key_labels: list[str] = []  # key labels copied onto request series; nothing else a client sets
    bearer_token: str | None = None


class TracingConfig(_Strict):
    """`tracing:` in tallygate.yaml; the exporter itself is configured by the OTEL_* variables."""

    enabled: bool = False  # prompts and completions are never put on spans


class ReportingConfig(_Strict):
    """`reporting:` in tallygate.yaml: the time zone of analytics days, months and invoices."""

    timezone: str = "UTC"  # an IANA name; `tz=` on a question overrides it

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zone(v)
        except ValueError:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as UTC, Europe/Berlin "
                             "or Asia/Kolkata") from None
        return "UTC" if v == "Etc/UTC" else v


class GatewayConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    policies: dict[str, PolicyConfig] = {}
    alerts: AlertsConfig = AlertsConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    reporting: ReportingConfig = ReportingConfig()
