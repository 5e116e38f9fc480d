"""Checks for single values: addresses, time zones, prices, database and hook URLs, HTTP headers.

Each check is a plain function wrapped in an ``Annotated`` type the section models use;
a check raises ValueError with a message that says how to write the value, which
pydantic turns into a problem at the key's file and line.
"""

from __future__ import annotations

import re
import shlex
from decimal import Decimal
from email.utils import parseaddr
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr

from balancewatch.core.money import MoneyError, check_currency, check_locale

MASK = "********"


def _locale(value: str) -> str:
    try:
        return check_locale(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return value


def _mailbox(value: str) -> str:
    """A From or Reply-To value: ``addr@domain`` or ``Name <addr@domain>``, on one line."""
    if not value:
        return value
    _name, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if "\r" in value or "\n" in value or not (at and local and domain) or any(c.isspace() for c in addr):
        raise ValueError(f"{value!r} is not an email address; write e.g. Balance alerts <alerts@example.com>")
    return value


Locale = Annotated[str, AfterValidator(_locale)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Mailbox = Annotated[str, AfterValidator(_mailbox)]


MAX_PRICE_DECIMALS = 12


def _price_currency(value: str) -> str:
    try:
        return check_currency(value.upper() if isinstance(value, str) else value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _service(value: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not 0 < len(text) <= 32:
        raise ValueError(f"{value!r} is not a service name; write the ledger's service, e.g. sms or voice")
    return text


def _price(value: Any) -> Decimal:
    """A unit price in major units, exact as written; finer than the currency's minor unit is fine."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{value!r} is not a price; write it exactly, e.g. 0.0075")
    try:
        price = Decimal(str(value).strip().replace("_", ""))
    except ArithmeticError:
        raise ValueError(f"{value!r} is not a price; write it exactly, e.g. 0.0075") from None
    if not price.is_finite() or price <= 0:
        raise ValueError(f"{value} is not a price; a unit price is above zero, e.g. 0.0075")
    if price.adjusted() > 9 or -int(price.as_tuple().exponent) > MAX_PRICE_DECIMALS:
        raise ValueError(
            f"{price:f}: a unit price has at most {MAX_PRICE_DECIMALS} decimals and 10 digits before them"
        )
    return price


PriceCurrency = Annotated[str, AfterValidator(_price_currency)]
Service = Annotated[str, AfterValidator(_service)]
Price = Annotated[Decimal, BeforeValidator(_price)]


SUPPORTED_DATABASES = "use sqlite:/// or postgresql://"


def database_url(value: str) -> str:
    """``value`` if it names a database balancewatch runs on, ``postgres://`` written as
    ``postgresql://``; empty stays empty (SQLite in the state directory).

    Raises ValueError naming the URL with its password masked.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not value:
        return value
    if value.startswith("postgres://"):
        value = "postgresql://" + value.removeprefix("postgres://")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(f"unsupported database {safe_url(value)!r}; {SUPPORTED_DATABASES}") from None
    # make_engine runs every postgresql URL on psycopg 3, whatever driver it names.
    if url.get_backend_name() == "postgresql" or url.drivername in ("sqlite", "sqlite+pysqlite"):
        return value
    raise ValueError(f"unsupported database {safe_url(value)!r}; {SUPPORTED_DATABASES}")


_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})")


def _listen(value: str) -> str:
    """``host:port``, ``[v6]:port`` or ``:port`` (every address), or empty."""
    found = _LISTEN.fullmatch(value) if value else None
    if value and not (found and 1 <= int(found["port"]) <= 65535):
        raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:9464, [::1]:9464 or :9464")
    return value


Listen = Annotated[str, AfterValidator(_listen)]


# Headers balancewatch sets itself on a top-up call; a configured one would clash.
_RESERVED_HEADERS = {"content-type", "content-length", "host", "idempotency-key", "transfer-encoding"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _header_name(value: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name; write e.g. Authorization")
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value}: balancewatch sets this header itself; remove it")
    return value


def _header_value(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if any(c in text for c in "\r\n\0"):
        # The value is a secret: say where, never what.
        raise ValueError("a header value must be one line")
    return value


def _hook_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{shown_url(value)!r} is not an http(s) URL; write e.g. https://billing.example/topups"
        )
    if parts.username or parts.password:
        raise ValueError(
            "a URL with a user or password; put credentials in topup.hook.headers (Authorization)"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not parts.hostname.startswith("127."):
        raise ValueError(
            f"{shown_url(value)}: http:// sends the request and its headers in clear; use https://, "
            "or http:// only to this machine (localhost, 127.0.0.1, ::1)"
        )
    return value


def shown_url(url: str) -> str:
    """``url`` without its query and fragment, which may hold a token: what logs and errors show."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command into words: {exc}") from None
    if isinstance(value, list) and not value:
        raise ValueError("the command is empty; write e.g. [/usr/local/bin/charge, --live]")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[SecretStr, AfterValidator(_header_value)]
HookUrl = Annotated[str, AfterValidator(_hook_url)]
Command = Annotated[list[str] | None, BeforeValidator(_command)]


def safe_url(url: str) -> str:
    """A database URL with its password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _masked_userinfo(url)


def _masked_userinfo(url: str) -> str:
    """``url``, which SQLAlchemy cannot read, with whatever follows the user name masked."""
    scheme, slashes, rest = url.partition("//")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{slashes}{userinfo.split(':')[0]}:***@{host}"
