"""Settings: pydantic models (``extra="forbid"`` everywhere) loaded from YAML, flags and environment.

Precedence, highest first: ``CALLCENTER_*`` environment variables > flags (``overrides``, dotted keys)
> the YAML file > the defaults below. Every wrong value becomes a :class:`ConfigError` whose message is
one line naming the key and what was expected, e.g. ``sip.port: expected an integer 1-65535, got 'abc'``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import types
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from callcenter import __version__
from callcenter.core.clock import iana_zone
from callcenter.core.errors import ConfigError
from callcenter.core.yamlsafe import SafeLoader

__all__ = [
    "CallsSettings",
    "ConfigError",
    "HttpSettings",
    "LogSettings",
    "MediaSettings",
    "Settings",
    "SipSettings",
    "TicketsSettings",
    "WechatAccountSettings",
    "WechatSettings",
    "ChatSettings",
    "WebchatSettings",
    "ENV_PREFIX",
    "DEFAULT_CONFIG_PATH",
    "load_settings",
]

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")  # the default; tls needs sip.tls_cert/tls_key
DigestAlgorithm = Literal["MD5", "SHA-256"]
DIGEST_ALGORITHMS: tuple[DigestAlgorithm, ...] = ("MD5",)

ENV_PREFIX = "CALLCENTER_"
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")  # lower-cased BCP 47 language[-subtags]
DEFAULT_CONFIG_PATH = Path("config.yaml")


def _custom(expected: str) -> PydanticCustomError:
    """An error whose text is exactly ``expected ...`` (the formatter appends the key and input)."""
    return PydanticCustomError("config", "{expected}", {"expected": expected})


def _related(key: str, expected: str, got: Any) -> PydanticCustomError:
    """An error about one field found by a model validator (loc would otherwise be the section)."""
    return PydanticCustomError("config_key", "{expected}", {"key": key, "expected": expected, "got": got})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode turns true/false into 1/0; a boolean where a number belongs is a mistake.
        if isinstance(value, bool) and info.field_name is not None:
            if _base_type(cls.model_fields[info.field_name].annotation) in (int, float):
                raise ValueError("bool given for a number")
        return value


class TrunkPrefixRule(_Section):
    """Rewrite a dialled number that starts with ``match``: drop ``strip`` digits, put ``prepend`` first."""

    match: str = Field("", pattern=r"^\+?[0-9*#]*$", description="prefix the number starts with")
    strip: int = Field(0, ge=0, le=20, description="leading characters removed")
    prepend: str = Field("", pattern=r"^\+?[0-9*#]*$", description="added in front afterwards")


class TrunkSettings(_Section):
    """The SIP trunk (PSTN gateway / provider) outgoing calls go through."""

    uri: str = Field(description="sip:host[:port] of the trunk (host:port accepted)")
    transport: Transport = Field("udp", description="udp, tcp or tls")
    username: str | None = Field(None, min_length=1, description="digest user for 401/407 (RFC 3261 §22.2)")
    password: str | None = Field(None, description="digest password (keep config.yaml private)")
    realm: str | None = Field(None, description="answer only this realm's challenges (null = any)")
    from_user: str | None = Field(
        None, min_length=1, description="caller ID: user part of From (null = username, else callcenter)"
    )
    from_display: str | None = Field(None, description="display name in From")
    prefixes: list[TrunkPrefixRule] = Field(
        default_factory=list, description="number rewriting; the first rule whose prefix matches applies"
    )
    ring_timeout_s: float = Field(30.0, gt=0, le=300, description="seconds a called number may ring")
    tls_verify: bool = Field(
        True,
        description="over TLS (transport tls or a sips: uri) the trunk's certificate must verify against "
        "sip.tls_ca, else the system's CAs; false = encrypted but unauthenticated",
    )
    srtp_fallback_s: float | None = Field(
        3600.0,
        gt=0,
        description="with media.srtp optional, a trunk that refused SRTP (488/606 to RTP/SAVP, then took "
        "plain RTP) is offered plain RTP/AVP at once for this long; null = until restart",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # CALLCENTER_SIP_TRUNK=sip:host:port (no credentials through the environment's one string)
        return {"uri": value} if isinstance(value, str) else value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        text = value.strip()
        if not text.lower().startswith(("sip:", "sips:")):
            text = f"sip:{text}"
        host = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)"
        if not re.fullmatch(r"sips?:(?:[^@\s]+@)?" + host + r"(?::\d{1,5})?(;[^\s]*)?", text):
            raise _custom("expected sip:host[:port] of the trunk")
        return text

    @field_serializer("password", when_used="json")
    def _hide(self, value: str | None) -> str | None:
        return None if value is None else "********"  # `config show` never prints the secret

    @model_validator(mode="after")
    def _credentials(self) -> TrunkSettings:
        if (self.username is None) != (self.password is None):
            raise _related("password" if self.password is None else "username",
                           "expected both username and password, or neither", None)
        return self


class SipProtectionSettings(_Section):
    """Flood and brute-force protection on the SIP port (callcenter/sip/guard.py)."""

    enabled: bool = Field(True, description="false = no rate limits, bans or call caps")
    requests_per_s: float = Field(50.0, gt=0, description="SIP requests per second per source address")
    request_burst: int = Field(100, ge=1, description="requests a source may send at once")
    registers_per_s: float = Field(2.0, gt=0, description="REGISTERs per second per source address")
    register_burst: int = Field(20, ge=1, description="REGISTERs a source may send at once")
    auth_failures: int = Field(5, ge=0, description="failed digest attempts that ban a source (0 = never)")
    auth_window_s: float = Field(60.0, gt=0, description="window the failed attempts are counted in")
    ban_s: float = Field(600.0, ge=0, description="seconds a banned source is ignored")
    max_calls_per_source: int = Field(50, ge=0, description="concurrent calls per source (0 = no cap)")
    max_calls: int = Field(500, ge=0, description="concurrent incoming calls in total (0 = no cap)")
    retry_after_s: int = Field(30, ge=1, description="Retry-After of the 503 beyond a call cap")
    scanner_user_agents: list[str] | None = Field(
        None, description="User-Agent substrings dropped silently; null = the built-in scanner list"
    )
    trusted: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="networks (CIDR) exempt from rates, bans and the per-source cap",
    )
    unknown_sources: Literal["public", "any"] = Field(
        "public",
        description="calls from unknown sources (not trusted, not an agent's phone): public = only to "
        "public numbers (404 otherwise), any = to every number",
    )
    public_numbers: list[str] = Field(
        default_factory=list,
        description="numbers unknown sources may call besides ivr.numbers: exact, or a prefix ending in *",
    )
    number_scan_failures: int = Field(
        10, ge=0, description="distinct non-public numbers within auth_window_s that ban a source (0 = never)"
    )

    @field_validator("public_numbers")
    @classmethod
    def _public_numbers(cls, value: list[str]) -> list[str]:
        for number in value:
            if not number or any(c.isspace() for c in number):
                raise _custom(f"{number!r} is not a number such as 100, +4930123 or a prefix such as +4930*")
        return value

    @field_validator("trusted")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise _custom(f"{net!r} is not a network such as 10.0.0.0/8 or 192.0.2.7") from None
        return value


class SipConnectionSettings(_Section):
    """Caps and timeouts of SIP over TCP/TLS connections (callcenter/sip/transport/limits.py), each
    transport counted on its own; sources in sip.protection.trusted are never refused. 0 = off."""

    max_total: int = Field(2000, ge=0, description="inbound connections open at once, all sources")
    max_per_source: int = Field(20, ge=0, description="inbound connections open at once from one address")
    handshake_timeout_s: float = Field(5.0, ge=0, description="seconds a TLS handshake may take")
    first_message_timeout_s: float = Field(
        10.0, ge=0, description="seconds to the first complete SIP message, and for any one message"
    )
    idle_timeout_s: float = Field(
        600.0, ge=0, description="seconds without traffic that close a connection no binding or call uses"
    )


class SipOverloadSettings(_Section):
    """Load shedding of new calls (callcenter/sip/overload.py): beyond what the server can complete,
    new INVITEs get 503 + Retry-After at once; calls in progress are never touched."""

    enabled: bool = Field(True, description="false = admit every new call however loaded")
    delay_high_s: float = Field(
        0.25, gt=0, description="requests waiting this long in the socket queue mean overload"
    )
    busy_high: float = Field(
        0.95, gt=0, le=1, description="share of time the event loop computes that means overload"
    )
    min_rate: float = Field(10.0, ge=0, description="new calls/s admitted however loaded")
    max_invites_per_s: float = Field(0.0, ge=0, description="a fixed ceiling on new calls/s; 0 = none")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 for overload")


class SipSettings(_Section):
    host: str = Field("0.0.0.0", description="IPv4 address SIP listens on (0.0.0.0 = all)")
    host_v6: str | None = Field("::", description="IPv6 address SIP listens on (:: = all, null = no IPv6)")
    port: int = Field(5060, ge=1, le=65535, description="SIP port, for every transport")
    transports: list[Transport] = Field(
        default_factory=lambda: list(TRANSPORTS), min_length=1, description="transports to listen on"
    )
    public_host: str | None = Field(
        None, description="address advertised in Contact and SDP (null = derive from the bind address)"
    )
    realm: str = Field("callcenter", min_length=1, description="digest authentication realm")
    digest_algorithms: list[DigestAlgorithm] = Field(
        default_factory=lambda: list(DIGEST_ALGORITHMS),
        min_length=1,
        description="digest challenges offered, first preferred (MD5 only by default: see config.yaml)",
    )
    nonce_ttl_s: int = Field(300, ge=1, le=86400, description="seconds a digest nonce stays valid")
    register_min_expires: int = Field(60, ge=1, description="shortest registration accepted (423 below)")
    register_max_expires: int = Field(3600, ge=1, description="longest registration granted")
    register_default_expires: int = Field(3600, ge=1, description="expiry when the REGISTER gives none")
    max_message_bytes: int = Field(65536, ge=1024, le=1048576, description="larger SIP messages are refused")
    user_agent: str = Field(
        f"callcenter/{__version__}", min_length=1, description="User-Agent / Server header value"
    )
    trunk: TrunkSettings | None = Field(
        None, description="SIP trunk for outgoing calls (callbacks, transfers to numbers); null = none"
    )
    protection: SipProtectionSettings = Field(default_factory=SipProtectionSettings)
    overload: SipOverloadSettings = Field(default_factory=SipOverloadSettings)
    connections: SipConnectionSettings = Field(default_factory=SipConnectionSettings)
    tls_port: int = Field(5061, ge=1, le=65535, description="SIP over TLS port (RFC 3261 §26.2.1)")
    tls_cert: str | None = Field(
        None, description="PEM certificate (chain) for SIP over TLS; `callcenter tls selfsigned` makes one"
    )
    tls_key: str | None = Field(None, description="PEM private key of tls_cert (keep it private)")
    tls_ca: str | None = Field(
        None, description="PEM CA bundle to verify peers we connect to over TLS (null = not verified)"
    )

    @field_validator("host")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise _custom("expected an IPv4 address such as 0.0.0.0") from None
        return value

    @field_validator("host_v6")
    @classmethod
    def _ipv6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise _custom("expected an IPv6 address such as :: or null") from None
        return value

    @field_validator("public_host")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", value):
            raise _custom("expected a host name or IP address, or null")
        return value

    @field_validator("transports")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise _custom("expected a list of distinct transports (udp, tcp, tls)")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> SipSettings:
        if "tls" in self.transports:
            for key in ("tls_cert", "tls_key"):
                if getattr(self, key) is None:
                    raise _related(key, "expected a PEM file path when sip.transports has tls", None)
        if self.tls_port == self.port and "tls" in self.transports and "tcp" in self.transports:
            raise _related("tls_port", f"expected a port other than sip.port ({self.port}) for TLS",
                           self.tls_port)
        return self

    @model_validator(mode="after")
    def _expires_order(self) -> SipSettings:
        if self.register_min_expires > self.register_max_expires:
            raise _related(
                "register_min_expires",
                f"expected at most sip.register_max_expires ({self.register_max_expires})",
                self.register_min_expires,
            )
        if not self.register_min_expires <= self.register_default_expires <= self.register_max_expires:
            raise _related(
                "register_default_expires",
                f"expected a value between sip.register_min_expires ({self.register_min_expires}) "
                f"and sip.register_max_expires ({self.register_max_expires})",
                self.register_default_expires,
            )
        return self


class MediaSettings(_Section):
    rtp_port_min: int = Field(10000, ge=2, le=65534, description="lowest RTP port (even)")
    rtp_port_max: int = Field(20000, ge=2, le=65534, description="highest RTP port (even)")
    rtp_timeout_s: float = Field(30, gt=0, description="no RTP for this long ends the call with a BYE")
    inband_dtmf: bool = Field(
        True, description="detect DTMF tones in the audio of calls that negotiated no telephone-event"
    )
    ptime_ms: int = Field(20, ge=10, le=60, description="packet time of the audio the server sends")
    srtp: Literal["off", "optional", "required"] = Field(
        "optional",
        description="SRTP keyed by SDES (RFC 4568): off; optional = when offered (plain RTP otherwise; "
        "we offer it to phones registered over TLS); required = 488 to offers without it",
    )

    @field_validator("rtp_port_min", "rtp_port_max")
    @classmethod
    def _even(cls, value: int) -> int:
        # RFC 3550 §11: RTP on an even port, RTCP on the next odd one.
        if value % 2:
            raise _custom("expected an even integer 2-65534")
        return value

    @field_validator("ptime_ms")
    @classmethod
    def _ptime(cls, value: int) -> int:
        if value % 10:
            raise _custom("expected one of 10, 20, 30, 40, 50, 60")
        return value

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        if self.rtp_port_min >= self.rtp_port_max:
            raise _related(
                "rtp_port_min",
                f"expected less than media.rtp_port_max ({self.rtp_port_max})",
                self.rtp_port_min,
            )
        return self


class CallsSettings(_Section):
    ring_s: float = Field(
        0, ge=0, le=60, description="seconds the caller hears ringing (180) before the server answers"
    )
    demo_tone_hz: int = Field(440, ge=20, le=3999, description="tone an answered call hears (until the IVR)")
    demo_hangup_after_s: float = Field(
        10, ge=0, description="the server hangs up answered calls after this many seconds (0 = never)"
    )
    record: bool = Field(
        False, description="record every answered call as a stereo WAV (caller left, server right)"
    )
    shutdown_grace_s: float = Field(
        5, ge=0, description="on shutdown, seconds active calls get before the server hangs them up"
    )


class HttpSettings(_Section):
    host: str = Field("0.0.0.0", min_length=1, description="address the HTTP API listens on")
    port: int = Field(8080, ge=1, le=65535, description="HTTP API port")
    admin_token: str | None = Field(
        None,
        min_length=16,
        description="bearer token for the admin API (publishing flows, agent states); null = disabled",
    )
    metrics_token: str | None = Field(
        None,
        min_length=16,
        description="bearer token Prometheus scrapes GET /metrics with; null = admins/supervisors only",
    )
    login_failures: int = Field(
        20, ge=0, description="failed logins from one address before it must wait (429); 0 = no limit"
    )
    login_window_s: float = Field(600.0, gt=0, description="the failed logins refill over this many seconds")
    prompt_max_bytes: int = Field(
        10 << 20, ge=1024, description="largest prompt WAV an admin may upload (bytes; larger is 413)"
    )


class SpeechSettings(_Section):
    models_dir: Path = Field(
        Path("models"), description="where `callcenter models install` unpacks Vosk models"
    )
    model_catalog_url: str = Field(
        "https://alphacephei.com/vosk/models",
        min_length=1,
        description="where official Vosk models are listed and downloaded from (model-list.json)",
    )
    engines: dict[str, Literal["vosk", "whisper"]] = Field(
        default_factory=dict,
        description="language → engine (vosk | whisper); unlisted: Vosk when a model serves the language, "
        "else Whisper tiny.en for English",
    )
    vosk_models: dict[str, str] = Field(
        default_factory=dict,
        description="language → Vosk model folder or package (overrides models found in models_dir)",
    )
    vad: Literal["webrtc", "silero"] = Field(
        "webrtc", description="voice activity detector (silero: noisy lines)"
    )
    vad_aggressiveness: int = Field(3, ge=0, le=3, description="webrtcvad mode, 0 (permissive) to 3")
    silero_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Silero speech probability threshold")
    end_silence_ms: int = Field(
        700, ge=200, le=5000, multiple_of=20, description="trailing silence that ends an utterance"
    )
    menu_end_silence_ms: int = Field(
        500, ge=200, le=5000, multiple_of=20,
        description="trailing silence that ends an answer to a menu (an input offering keys or a phrase "
        "list); free-form questions keep end_silence_ms",
    )
    early_decode_ms: int = Field(
        240, ge=0, le=5000, multiple_of=20,
        description="Whisper: transcribe once the caller has been silent this long, before the end of "
        "the utterance (the result is dropped if speech resumes); 0 = only at the end",
    )
    transcribe_bridged: bool = Field(
        True, description="transcribe both sides (caller and agent) while a caller talks to an agent"
    )
    transcription_workers: int = Field(
        1, ge=1, le=16, description="bridged-call utterances recognised at once, over all calls"
    )
    transcription_backlog: int = Field(
        4, ge=1, le=100, description="utterances per side waiting for recognition (beyond: oldest dropped)"
    )

    @field_validator("engines", "vosk_models", mode="after")
    @classmethod
    def _language_tags(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for tag, v in value.items():
            key = tag.strip().lower().replace("_", "-")
            if not _LANGUAGE_TAG.match(key):
                raise _custom(f"expected language tags such as en, zh-CN or ko as keys, not {tag!r}")
            out[key] = v
        return out


class IvrSettings(_Section):
    flows_dir: Path = Field(Path("ivr_flows"), description="folder of the IVR flow files (*.yaml)")
    numbers: dict[str, str] = Field(
        default_factory=lambda: {"100": "hotline_en", "200": "hotline_zh"},
        description="dialled number (Request-URI user part) → flow id",
    )
    default_flow: str | None = Field(
        None, description="flow for numbers not in `numbers` (null = those calls hear the demo tone)"
    )
    reload_interval_s: float = Field(
        1.0, gt=0, description="seconds between looks at flows_dir for changed flow files (hot reload)"
    )
    intents_file: Path | None = Field(
        Path("ivr_flows/intents/intents.yaml"),
        description="intents for `intent` nodes: examples and keywords per language (null = keyword match)",
    )

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        # YAML reads `100: hotline_en` with an integer key; a dialled number is text.
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value


class EscalationSettings(_Section):
    after_s: float = Field(gt=0, description="seconds of waiting after which these skills apply instead")
    skills: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=dict, description="skill → minimum level (empty = any agent of the queue)"
    )


class QueueSettings(_Section):
    skills: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=dict, description="skill → minimum level an agent needs (empty = any agent)"
    )
    strategy: Literal["longest_idle", "round_robin", "ring_all", "least_talk_time", "skill_weighted"] = Field(
        "longest_idle", description="which free agent is offered the call"
    )
    max_wait_s: float | None = Field(
        None, gt=0, description="overflow after this many seconds (null = never)"
    )
    max_length: int | None = Field(None, ge=1, description="callers beyond this many overflow at once")
    overflow: str | None = Field(
        None, description="queue:NAME, voicemail or callback (null = the flow's on_overflow decides)"
    )
    escalations: list[EscalationSettings] = Field(
        default_factory=list, description="widen the skills after a while"
    )
    service_level_s: float = Field(20.0, gt=0, description="answered within this counts for service level")
    wrap_up_s: float = Field(0.0, ge=0, description="seconds an agent gets after a call before the next")
    ring_timeout_s: float = Field(
        15.0, gt=0, description="seconds an agent's phone rings before the next agent"
    )
    join_when_empty: bool = Field(
        False, description="queue callers even when no agent with the skills is logged in"
    )

    @field_validator("overflow")
    @classmethod
    def _overflow(cls, value: str | None) -> str | None:
        if value is not None and value not in ("voicemail", "callback") and not re.fullmatch(
            r"queue:[A-Za-z0-9_.-]+", value
        ):
            raise _custom("expected queue:NAME, voicemail, callback or null")
        return value


def _default_queues() -> dict[str, QueueSettings]:
    return {name: QueueSettings(skills={name: 1}) for name in ("sales", "support", "billing")} | {
        "general": QueueSettings()
    }


class WrapUpCode(_Section):
    code: str = Field(
        min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$", description="stored on the call record"
    )
    label: str = Field(min_length=1, max_length=64, description="what the agent's page shows")


def _default_wrap_up_codes() -> list[WrapUpCode]:
    return [
        WrapUpCode(code="resolved", label="Resolved"),
        WrapUpCode(code="follow-up", label="Follow-up needed"),
        WrapUpCode(code="escalated", label="Escalated"),
        WrapUpCode(code="wrong-number", label="Wrong number"),
    ]


class RoutingSettings(_Section):
    queues: dict[str, QueueSettings] = Field(
        default_factory=_default_queues, description="queue name → its settings (flows name these queues)"
    )
    max_missed_offers: int = Field(
        3, ge=1, description="offers an agent misses in a row before going not-ready automatically"
    )
    available_on_register: bool = Field(
        True, description="an agent whose softphone registers becomes available (else not-ready)"
    )
    caller_id_header: bool = Field(
        True, description="agents' phones show the caller's number and name (From of the offer)"
    )
    default_max_chats: int = Field(
        3, ge=0, description="concurrent chats an agent takes unless their account says otherwise"
    )
    callback_retries: int = Field(
        2, ge=0, le=10, description="further tries when a called-back customer does not answer"
    )
    callback_retry_delay_s: float = Field(
        300.0, gt=0, description="seconds before a callback is tried again (it keeps its place)"
    )
    wrap_up_codes: list[WrapUpCode] = Field(
        default_factory=_default_wrap_up_codes,
        description="codes an agent picks after a call (stored on the call record as wrap_up_code)",
    )
    timezone: str = Field(
        "UTC",
        description="IANA timezone of the local day (reports; per-day talk times reset at its midnight), "
        "e.g. Europe/Berlin",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            iana_zone(value)
        except ValueError:
            raise _custom("expected an IANA timezone such as Europe/Berlin") from None
        return value

    @field_validator("wrap_up_codes")
    @classmethod
    def _unique_codes(cls, value: list[WrapUpCode]) -> list[WrapUpCode]:
        codes = [c.code for c in value]
        if len(codes) != len(set(codes)):
            raise _custom("expected each code once")
        return value

    @model_validator(mode="after")
    def _overflow_targets(self) -> RoutingSettings:
        for name, queue in self.queues.items():
            if queue.overflow is not None and queue.overflow.startswith("queue:"):
                target = queue.overflow.removeprefix("queue:")
                key = f"queues.{name}.overflow"
                if target not in self.queues:
                    raise _related(key, f"expected a configured queue, no {target!r}", queue.overflow)
                if target == name:
                    raise _related(key, "expected another queue, not itself", queue.overflow)
        return self


class SlaCalendarSettings(_Section):
    timezone: str = Field("UTC", description="IANA timezone of the business hours, e.g. Europe/Berlin")
    weekly: dict[str, list[str]] | None = Field(
        None, description='days → hours, e.g. {"mon-fri": ["09:00-17:00"]}; null = around the clock'
    )
    holidays: list[date] = Field(default_factory=list, description="days without business hours")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            iana_zone(value)
        except ValueError:
            raise _custom("expected an IANA timezone such as Europe/Berlin") from None
        return value


class BusinessHoursSettings(SlaCalendarSettings):
    """A named schedule for the flows' ``hours`` nodes (``business_hours.NAME``); the day and time
    ranges are checked where the IVR builds its Schedule from it."""


class SlaTargetSettings(_Section):
    first_response_hours: float | None = Field(
        None, gt=0, description="business hours until a person first responds (null = no target)"
    )
    resolution_hours: float | None = Field(
        None, gt=0, description="business hours until solved, pending time not counted (null = no target)"
    )


PriorityName = Literal["low", "normal", "high", "urgent"]


def _default_sla_targets() -> dict[PriorityName, SlaTargetSettings]:
    hours: dict[PriorityName, tuple[int, int]] = {
        "low": (24, 120), "normal": (8, 40), "high": (4, 16), "urgent": (1, 4)
    }
    return {p: SlaTargetSettings(first_response_hours=f, resolution_hours=r) for p, (f, r) in hours.items()}


SlaTargetName = Literal["first_response", "resolution"]


def _both_targets() -> list[SlaTargetName]:
    return ["first_response", "resolution"]


class SlaActionSettings(_Section):
    """What the checker does to a ticket when it raises a warning or a breach (each action once per
    ticket and target, audited as a ticket event by actor ``sla``)."""

    targets: list[SlaTargetName] = Field(
        default_factory=_both_targets,
        min_length=1,
        description="which targets' warnings/breaches run these actions",
    )
    priority: Literal["raise", "low", "normal", "high", "urgent"] | None = Field(
        None, description="raise = one step up; a name = at least that priority (never lowered)"
    )
    queue: str | None = Field(None, min_length=1, max_length=64, description="move the ticket to this queue")
    assignee: str | None = Field(None, min_length=1, max_length=64, description="reassign to this agent")
    unassign: bool = Field(False, description="take it from its assignee (back to the queue's pool)")
    tags: list[str] = Field(default_factory=list, description="tags to add")
    note: str | None = Field(None, min_length=1, description="internal note added to the ticket")

    @model_validator(mode="after")
    def _one_assignment(self) -> SlaActionSettings:
        if self.unassign and self.assignee is not None:
            raise _related("unassign", "expected either assignee or unassign, not both", True)
        return self


class SlaSettings(_Section):
    enabled: bool = Field(True, description="give tickets due times and raise warnings and breaches")
    calendar: SlaCalendarSettings = Field(default_factory=SlaCalendarSettings)
    targets: dict[PriorityName, SlaTargetSettings] = Field(
        default_factory=_default_sla_targets, description="priority → targets (unlisted: none)"
    )
    warning_percent: float = Field(75, gt=0, lt=100, description="warn when this much of a target has passed")
    check_interval_s: float = Field(30, gt=0, description="seconds between two checks for due tickets")
    on_warning: SlaActionSettings | None = Field(None, description="actions when a warning is raised")
    on_breach: SlaActionSettings | None = Field(None, description="actions when a target is breached")


class TicketsSettings(_Section):
    from_calls: Literal["all", "unresolved", "none"] = Field(
        "unresolved",
        description="ticket from each handled call: all, unresolved (not answered by an agent nor ended by "
        "the flow) or none",
    )
    dedupe_days: float = Field(
        7, ge=0, description="a caller's open ticket updated within this many days is updated, not duplicated"
    )
    categories: dict[str, str] = Field(
        default_factory=dict, description="intent → ticket category (unlisted intents: the intent's name)"
    )
    vip_priority: Literal["low", "normal", "high", "urgent"] = Field(
        "high", description="lowest priority of a VIP customer's tickets (VIP level 1-9)"
    )
    phone_country_code: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]{0,2}$",
        description="country calling code for national numbers (0301234 → +49301234 with 49); null = keep",
    )
    summary_sentences: int = Field(3, ge=1, le=10, description="key sentences in a ticket's summary")
    sla: SlaSettings = Field(default_factory=SlaSettings)


class WebhookSettings(_Section):
    url: str = Field(description="http(s) URL the events are POSTed to")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key signing each delivery (keep private)")
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description='event names or shell patterns: "call_ended", "queue_*", "tickets.*", "*"',
    )
    max_attempts: int = Field(6, ge=1, le=20, description="tries per event before it is given up")
    timeout_s: float = Field(5.0, gt=0, le=60, description="seconds one POST may take")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/\S*)?$", value):
            raise _custom("expected an http:// or https:// URL")
        return value


# --- wechat (issue 9; owned by the WeChat gateway) -------------------------------------------------------
_WECHAT_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class WechatAccountSettings(_Section):
    """One WeChat Official Account, served at ``/wechat/{name}`` (``default``: also at ``/wechat``)."""

    token: str | None = Field(
        None, pattern=r"^[A-Za-z0-9]{3,32}$", description="the callback Token (3-32 letters/digits)"
    )
    app_id: str | None = Field(None, min_length=1, max_length=64, description="AppID (wx...)")
    app_secret: str | None = Field(None, min_length=1, description="AppSecret for access_token (private)")
    encoding_aes_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9]{43}$", description="EncodingAESKey (43 characters), safe/compat modes"
    )
    previous_aes_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9]{43}$", description="the key before the last rotation (still accepted)"
    )
    mode: Literal["plain", "safe", "compat"] = Field(
        "plain", description="message encryption: plain, safe (AES) or compat (both accepted)"
    )

    @field_serializer("app_secret", "encoding_aes_key", "previous_aes_key", "token", when_used="json")
    def _hide(self, value: str | None) -> str | None:
        return None if value is None else "********"  # `config show` never prints the secret

    @model_validator(mode="after")
    def _aes_needs(self) -> WechatAccountSettings:
        if self.mode != "plain":
            if self.encoding_aes_key is None:
                raise _related("encoding_aes_key", f"expected an EncodingAESKey in {self.mode} mode", None)
            if self.app_id is None:
                raise _related("app_id", f"expected the AppID in {self.mode} mode", None)
        if (self.app_id is None) != (self.app_secret is None) and self.app_secret is not None:
            raise _related("app_id", "expected app_id with app_secret", None)
        return self


class WechatSettings(_Section):
    token: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9]{3,32}$",
        description="Token of the `default` account (env CALLCENTER_WECHAT_TOKEN); alone = one plain account",
    )
    accounts: dict[str, WechatAccountSettings] = Field(
        default_factory=dict, description="account name → settings; each served at /wechat/{name}"
    )
    api_base: str = Field("https://api.weixin.qq.com", description="WeChat API base URL (tests: a stand-in)")
    max_body_bytes: int = Field(
        65536, ge=1024, le=1 << 22, description="larger POST bodies are refused (413)"
    )
    passive_reply_s: float = Field(
        4.5, gt=0, lt=5, description="seconds to wait for the bot's first answer before replying `success`"
    )
    timestamp_window_s: float = Field(
        300.0, ge=10, le=3600, description="callbacks whose timestamp is further off than this are refused"
    )
    api_timeout_s: float = Field(5.0, gt=0, le=60, description="seconds one WeChat API call may take")

    @field_serializer("token", when_used="json")
    def _hide(self, value: str | None) -> str | None:
        return None if value is None else "********"

    @field_validator("accounts")
    @classmethod
    def _names(cls, value: dict[str, WechatAccountSettings]) -> dict[str, WechatAccountSettings]:
        for name in value:
            if not re.match(_WECHAT_NAME, name):
                raise _custom(f"expected account names of lower-case letters, digits, - and _, got {name!r}")
        return value

    @field_validator("api_base")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
            raise _custom("expected an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_token(self) -> WechatSettings:
        # wechat.token (or CALLCENTER_WECHAT_TOKEN) is the default account's token and wins over the
        # file's; with no accounts at all it makes a plaintext `default` account on its own.
        if self.token is not None:
            base = self.accounts.get("default") or WechatAccountSettings()
            self.accounts = {**self.accounts, "default": base.model_copy(update={"token": self.token})}
        for name, account in self.accounts.items():
            if account.token is None:
                raise _related(f"accounts.{name}.token", "expected the account's Token", None)
        return self

    def default_account(self) -> str | None:
        """The account ``/wechat`` serves: ``default``, or the only one."""
        if "default" in self.accounts:
            return "default"
        return next(iter(self.accounts)) if len(self.accounts) == 1 else None


# --- chat (issue 9; owned by the conversation engine) -----------------------------------------------------


UPLOAD_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


class WebchatSettings(_Section):
    """The embeddable web chat widget (callcenter/chat/webchat.py)."""

    secret: str | None = Field(
        None,
        min_length=32,
        description="HMAC key signing visitor ids (null = generated once into data_dir/webchat_secret)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description='sites that may embed the widget, e.g. ["https://www.example.com"]; "*" = any; '
        "the server's own origin is always allowed",
    )
    title: str = Field("Chat with us", min_length=1, max_length=80, description="the widget's default title")
    queues: list[str] = Field(
        default_factory=list,
        description="queues whose logged-in agents make the widget online (empty = the flow's queue nodes)",
    )
    schedule: str | None = Field(
        None, description="business_hours schedule: outside it the widget shows the offline form"
    )
    visitor_rate_per_s: float = Field(1.0, gt=0, description="messages a visitor may send per second")
    visitor_burst: int = Field(20, ge=1, description="messages a visitor may send at once")
    ip_rate_per_s: float = Field(5.0, gt=0, description="requests one address may make per second")
    ip_burst: int = Field(60, ge=1, description="requests one address may make at once")
    max_message_bytes: int = Field(16384, ge=256, le=1 << 20, description="larger bodies are refused (413)")
    max_upload_bytes: int = Field(
        5 << 20, ge=1024, le=100 << 20, description="largest file a visitor may upload (bytes; 413)"
    )
    upload_types: list[str] = Field(
        default_factory=lambda: list(UPLOAD_TYPES),
        description="types a visitor may upload, recognised by their first bytes (not the file name)",
    )
    poll_wait_s: float = Field(25.0, gt=0, le=60, description="how long GET /chat/poll waits for news")

    @field_serializer("secret", when_used="json")
    def _hide(self, value: str | None) -> str | None:
        return None if value is None else "********"

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^\s/?#]+$", origin):
                raise _custom(f"expected origins like https://www.example.com (no path), got {origin!r}")
        return [o.rstrip("/").lower() for o in value]

    @field_validator("upload_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for mime in value:
            if mime not in UPLOAD_TYPES:
                raise _custom(f"expected types among {', '.join(UPLOAD_TYPES)}, got {mime!r}")
        return value


class ChatSettings(_Section):
    """Text conversations (web chat, WeChat): which flow answers, timeouts, chat routing."""

    flows: dict[str, str] = Field(
        default_factory=dict,
        description='channel or "channel:account" → flow id (default: the first flow of ivr.numbers)',
    )
    reply_timeout_s: float = Field(
        300.0, gt=0, description="seconds without a reply before a flow's question takes its no-input path"
    )
    idle_close_s: float = Field(
        1800.0, gt=0, description="a conversation without messages for this long is closed"
    )
    dedupe_hours: float = Field(24.0, gt=0, description="hours a channel message id is remembered (retries)")
    offer_during_calls: bool = Field(False, description="agents on a voice call (or wrap-up) get new chats")
    webchat: WebchatSettings = Field(default_factory=WebchatSettings)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="lowest level logged")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line")

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Settings(_Section):
    data_dir: Path = Field(Path("data"), description="directory for the database and recordings")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (null = sqlite:///{data_dir}/callcenter.db)"
    )
    # Scale-out (issue 10). Both keys are read by callcenter/cluster/; null redis_url = one node.
    node_id: str = Field(
        default_factory=lambda: socket.gethostname() or "node",
        description="this node's name in a cluster (env CALLCENTER_NODE_ID; null = the host name)",
    )
    redis_url: str | None = Field(
        None, description="Redis URL for live state shared by nodes (null = single node, in-process bus)"
    )
    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    calls: CallsSettings = Field(default_factory=CallsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    ivr: IvrSettings = Field(default_factory=IvrSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    business_hours: dict[str, BusinessHoursSettings] = Field(
        default_factory=dict,
        description="schedule name → {timezone, weekly, holidays}; flows' hours nodes name these",
    )
    log: LogSettings = Field(default_factory=LogSettings)
    wechat: WechatSettings = Field(default_factory=WechatSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    tickets: TicketsSettings = Field(default_factory=TicketsSettings)
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="outgoing webhooks: url, secret, events (callcenter/webhooks.py)"
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _nonempty_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise _custom("expected a directory path")
        return value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", value):
            raise _custom("expected a database URL such as sqlite:///data/callcenter.db, or null")
        return value

    @field_validator("node_id", mode="before")
    @classmethod
    def _node_id_default(cls, value: Any) -> Any:
        return (socket.gethostname() or "node") if value is None or value == "" else value

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        # It names Redis keys and tags records and logs: keep it plain.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise _custom("expected 1-64 letters, digits, '.', '_' or '-' (a host name)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(redis|rediss|unix)://", value):
            raise _custom("expected a Redis URL such as redis://127.0.0.1:6379/0, or null")
        return value

    @property
    def db_url(self) -> str:
        """The database URL in force: ``database_url`` or the SQLite file under ``data_dir``."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'callcenter.db'}"


_SECTIONS: dict[str, type[_Section]] = {
    name: f.annotation
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, _Section)
}


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults < YAML file < ``overrides`` (dotted keys) < ``CALLCENTER_*`` env.

    ``config_path`` None means ``./config.yaml`` if it exists (else defaults only); an explicit path
    must exist. ``env`` defaults to ``os.environ``. Raises :class:`ConfigError` (one-line message).
    """
    sources: dict[str, str] = {}  # dotted key -> where its value came from, for error messages
    data: dict[str, Any] = {}
    if config_path is None and DEFAULT_CONFIG_PATH.is_file():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is not None:
        data = _read_yaml(config_path, sources)
    for key, value in (overrides or {}).items():
        _check_key(key, "command line")
        _set(data, key, value)
        sources[key] = "command line"
    for key, value in _env_values(os.environ if env is None else env).items():
        _set(data, key, value[0])
        sources[key] = value[1]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


class _UniqueKeyLoader(SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, sources: dict[str, str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: expected UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got a {kind}")
    _record_lines(root, (), path, sources)
    return data


def _record_lines(
    node: yaml.Node | None, prefix: tuple[str, ...], path: Path, sources: dict[str, str]
) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = (*prefix, str(key_node.value))
        sources[".".join(key)] = f"{path}:{key_node.start_mark.line + 1}"
        if len(key) == 1:
            _record_lines(value_node, key, path, sources)


def _check_key(dotted: str, origin: str) -> None:
    parts = dotted.split(".")
    if len(parts) == 1 and parts[0] in Settings.model_fields:
        return
    if len(parts) == 2 and parts[0] in _SECTIONS and parts[1] in _SECTIONS[parts[0]].model_fields:
        return
    raise ConfigError(f"{dotted}: unknown key{_suggest(dotted)} (from {origin})")


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return  # the file has a scalar where a section belongs: validation reports it
        node = child
    current = node.get(parts[-1])
    if isinstance(value, Mapping) and isinstance(current, dict) and parts[0] in _SECTIONS and len(parts) == 1:
        current.update(value)  # a whole section given: merged key by key, not replaced
    else:
        node[parts[-1]] = value


def _env_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``CALLCENTER_<SECTION>_<KEY>`` (or ``CALLCENTER_<KEY>`` for top-level keys) → dotted key.

    Variables whose section part is not one of ours (e.g. ``CALLCENTER_E2E``) are left alone; an unknown
    key inside a known section is an error, so a typo does not go unnoticed.
    """
    out: dict[str, tuple[Any, str]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest in Settings.model_fields and rest not in _SECTIONS:
            key, field = rest, Settings.model_fields[rest]
        else:
            section, _, sub = rest.partition("_")
            if section not in _SECTIONS or not sub:
                continue
            key = f"{section}.{sub}"
            found = _section_field(_SECTIONS[section], sub)
            if found is None:
                raise ConfigError(f"{key}: unknown key{_suggest(key)} (from {name})")
            path, field = found
            key = ".".join((section, *path))
        out[key] = (_env_value(raw, field), name)
    return out


def _section_field(model: type[BaseModel], name: str) -> tuple[tuple[str, ...], FieldInfo] | None:
    """``name`` (lower case, after the section) as a field of ``model`` or of one of its subsections:
    ``protection_trusted`` → (``protection``, ``trusted``). Underscores are ambiguous, so a field of
    the model itself wins, then the subsection whose name is the longest prefix."""
    if name in model.model_fields:
        return (name,), model.model_fields[name]
    subs = [
        (sub, base)
        for sub, f in model.model_fields.items()
        if isinstance(base := _base_type(f.annotation), type) and issubclass(base, BaseModel)
    ]
    for sub, base in sorted(subs, key=lambda s: -len(s[0])):
        if name.startswith(sub + "_"):
            found = _section_field(base, name[len(sub) + 1 :])
            if found is not None:
                return (sub, *found[0]), found[1]
    return None


def _env_value(raw: str, field: FieldInfo) -> Any:
    if _is_optional(field.annotation) and raw.strip().lower() in ("", "null", "none"):
        return None
    if get_origin(_base_type(field.annotation)) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if get_origin(_base_type(field.annotation)) is dict:  # NUMBER=FLOW,NUMBER=FLOW ("" = none)
        pairs = [item.partition("=") for item in raw.split(",") if item.strip()]
        return {k.strip(): v.strip() for k, _, v in pairs}
    return raw


def _suggest(dotted: str) -> str:
    known = [*(k for k in Settings.model_fields if k not in _SECTIONS)]
    known += [f"{s}.{k}" for s, model in _SECTIONS.items() for k in model.model_fields]
    close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# Error messages


def _describe(exc: ValidationError, sources: dict[str, str]) -> str:
    """One line for the first error: ``key: expected ..., got ...`` plus where the value came from."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if isinstance(p, str)]
    ctx = err.get("ctx") or {}
    if err["type"] == "config_key":
        loc.append(ctx["key"])
    key = ".".join(loc) or "(top level)"
    origin = sources.get(key) or (sources.get(loc[0]) if loc else None)
    suffix = f" (from {origin})" if origin else ""
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key{_suggest(key)}{suffix}"
    if err["type"] == "config_key":
        return f"{key}: {ctx['expected']}, got {ctx['got']!r}{suffix}"
    if err["type"] == "config":
        expected = ctx["expected"]
    else:
        field = _field_at(loc)
        expected = "expected " + (_expected(field) if field is not None else "a mapping of settings")
    return f"{key}: {expected}, got {_show(err['input'])}{suffix}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_at(loc: list[str]) -> FieldInfo | None:
    model: type[BaseModel] = Settings
    field: FieldInfo | None = None
    parts = iter(loc)
    for part in parts:
        if part not in model.model_fields:
            return None
        field = model.model_fields[part]
        base = _base_type(field.annotation)
        if get_origin(base) is dict:  # a mapping of named entries (routing.queues.NAME): skip the name
            if next(parts, None) is None:
                return field
            value = get_args(base)[1]
            if get_origin(value) is Annotated:  # e.g. skill → level 1-5
                return FieldInfo.from_annotation(value)
            base = value
        elif get_origin(base) is list and next(iter(get_args(base)), None) is not None:
            item = get_args(base)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                base = item  # list of sections: the index is not a str part of loc
        if isinstance(base, type) and issubclass(base, BaseModel):
            model, field = base, None
    return field


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _base_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _expected(field: FieldInfo) -> str:
    base = _base_type(field.annotation)
    bounds = {type(m).__name__: m for m in field.metadata}
    lo = getattr(bounds.get("Ge"), "ge", None)
    hi = getattr(bounds.get("Le"), "le", None)
    gt = getattr(bounds.get("Gt"), "gt", None)
    if base is int:
        text = f"an integer {lo}-{hi}" if lo is not None and hi is not None else "an integer"
        if hi is None and lo is not None:
            text = f"an integer >= {lo}"
    elif base is float:
        text = "a number"
        if lo is not None:
            text = f"a number >= {lo}" if hi is None else f"a number {lo}-{hi}"
        elif gt is not None:
            text = f"a number > {gt}"
    elif base is bool:
        text = "true or false"
    elif get_origin(base) is Literal:
        text = "one of " + ", ".join(str(a) for a in get_args(base))
    elif get_origin(base) is list:
        (item,) = get_args(base)
        choices = ", ".join(str(a) for a in get_args(item)) if get_origin(item) is Literal else "values"
        text = f"a list of {choices}"
        if isinstance(bounds.get("MinLen"), annotated_types.MinLen):
            text = "a non-empty " + text[2:]
    elif base is Path:
        text = "a directory path"
    else:
        min_len = getattr(bounds.get("MinLen"), "min_length", 0)
        text = f"a string of at least {min_len} characters" if min_len > 1 else (
            "a non-empty string" if min_len else "a string")
    return text + (" or null" if _is_optional(field.annotation) else "")
