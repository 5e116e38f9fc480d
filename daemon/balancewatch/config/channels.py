"""Named channels (``channels:``): where messages go besides the owner's email, like
Alertmanager's receivers.

Three types, each a model of its own, chosen by ``type``:

- ``email``: a named list of addresses (``to:``), delivered by the daemon's email transport
  (SMTP or files) like any email;
- ``webhook``: an HTTP(S) endpoint receiving signed JSON events (Standard Webhooks);
- ``chat``: an Apprise URL (Slack, Microsoft Teams, Telegram, Discord, Mattermost, ntfy,
  PagerDuty, generic JSON, ...), receiving a short text message.

A rule names a channel in ``notify:`` as ``channel:NAME``. Secrets (a webhook's signing
secret, a chat URL, which holds the service's token) come from the value itself, an
environment variable (``secret_env``/``url_env``), a file (``secret_file``/``url_file``) or
a systemd credential named ``channel-NAME`` (``LoadCredential=channel-NAME:...``); they are
read once when the config loads, masked in ``config show`` and never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, SecretStr, model_validator

from balancewatch.config.values import HeaderName, HeaderValue, HookUrl, shown_url
from balancewatch.core.durations import Duration

# The channel every email goes through; a named channel may not take its name.
EMAIL = "email"
CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")  # outbox.channel holds 16 characters
REFERENCE_PREFIX = "channel:"
# Headers the webhook transport sets itself; a configured one would clash or forge a signature.
_WEBHOOK_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"}


def _channel_name(value: str) -> str:
    if not CHANNEL_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a channel name: use lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit (at most 16 characters)"
        )
    if value == EMAIL:
        raise ValueError("'email' is the daemon's own email channel; name this channel otherwise")
    return value


ChannelName = Annotated[str, AfterValidator(_channel_name)]


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Messages a second this channel is sent at most (chat services limit senders); 0: no limit.
    rate: Decimal = Field(default=Decimal(0), ge=0, le=10_000)


class EmailChannel(_Channel):
    """A named list of addresses: ``channel:finance`` in a rule adds them to its email."""

    type: Literal["email"]
    to: list[str] = Field(min_length=1)


class WebhookChannel(_Channel):
    """An endpoint that receives each event as signed JSON (docs/webhooks.md)."""

    type: Literal["webhook"]
    url: HookUrl = Field(repr=False)  # its query may hold a token
    # The signing secret, ``whsec_`` and base64 (24 to 64 bytes): here, in a variable or a file.
    secret: SecretStr | None = None
    secret_env: str = ""
    secret_file: Path | None = None
    timeout: Duration = timedelta(seconds=10)
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _own_headers(self) -> WebhookChannel:
        clash = sorted(h for h in self.headers if h.lower() in _WEBHOOK_HEADERS)
        if clash:
            raise ValueError(f"header {clash[0]!r} is set by balancewatch itself; remove it")
        if not self.url:
            raise ValueError("a webhook channel needs url: https://...")
        return self

    def describe(self) -> str:
        return f"webhook POST {shown_url(self.url)}"


class ChatChannel(_Channel):
    """A chat or paging service through an Apprise URL (``slack://...``, ``json://...``)."""

    type: Literal["chat"]
    url: SecretStr | None = None
    url_env: str = ""
    url_file: Path | None = None

    def describe(self) -> str:
        return "chat (Apprise)"


Channel = Annotated[EmailChannel | WebhookChannel | ChatChannel, Discriminator("type")]


def credential_name(channel: str) -> str:
    """The systemd credential a channel's secret may come from."""
    return f"channel-{channel}"


def _secret_sources(channel: WebhookChannel | ChatChannel) -> tuple[str, SecretStr | None, str, Path | None]:
    if isinstance(channel, WebhookChannel):
        return "secret", channel.secret, channel.secret_env, channel.secret_file
    return "url", channel.url, channel.url_env, channel.url_file


def read_secret(name: str, channel: WebhookChannel | ChatChannel, environ: Mapping[str, str]) -> str:
    """The secret of channel ``name``: its value, variable, file or systemd credential, in that
    order of being written (at most one may be). Raises ValueError naming the key and what to do."""
    key, value, env, path = _secret_sources(channel)
    given = [k for k, v in ((key, value), (f"{key}_env", env), (f"{key}_file", path)) if v]
    if len(given) > 1:
        raise ValueError(f"set at most one of {', '.join(given)}")
    if value is not None:
        text = value.get_secret_value()
    elif env:
        if env not in environ:
            raise ValueError(f"{key}_env: the variable {env} is not set")
        text = environ[env]
    elif path is not None:
        text = _read(path, f"{key}_file")
    else:
        creds = environ.get("CREDENTIALS_DIRECTORY")
        credential = Path(creds) / credential_name(name) if creds else None
        if credential is None or not credential.is_file():
            raise ValueError(
                f"no {key}: set {key}, {key}_env or {key}_file, or the systemd credential "
                f"{credential_name(name)}"
            )
        text = _read(credential, "credential")
    text = text.strip()
    if isinstance(channel, WebhookChannel):
        check_signing_secret(text)
    elif not text:
        raise ValueError("the chat URL is empty")
    return text


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{what}: cannot read {path}: {reason}") from None


def check_signing_secret(text: str) -> bytes:
    """The key of a Standard Webhooks secret (``whsec_`` then base64 of 24 to 64 bytes); raises
    ValueError saying how to make one. The secret itself is never in the message."""
    how = "write whsec_ followed by base64 of 32 random bytes, e.g. `echo whsec_$(openssl rand -base64 32)`"
    if not text.startswith("whsec_"):
        raise ValueError(f"the signing secret must start with whsec_; {how}")
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the signing secret is not base64 after whsec_; {how}") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the signing secret holds {len(key)} bytes, not 24 to 64; {how}")
    return key


def resolve_secrets(channels: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every webhook's and chat channel's secret, by channel name; raises ValueError for the
    first that cannot be read, prefixed with ``NAME:``."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, channel in channels.items():
        if isinstance(channel, WebhookChannel | ChatChannel):
            try:
                out[name] = read_secret(name, channel, environ)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    return out


def reference(text: str) -> str | None:
    """The channel ``text`` names (``channel:ops-slack`` -> ``ops-slack``), or None if it names none."""
    if text.startswith(REFERENCE_PREFIX):
        return text[len(REFERENCE_PREFIX) :]
    return None
