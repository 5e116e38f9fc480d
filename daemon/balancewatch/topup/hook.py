"""Asking the platform to charge: an HTTP POST or a command, and what its answer means.

Both hooks get the same JSON (``payload``). The answer is classified into one
of four outcomes (docs/topup.md has the whole contract):

- ``accepted``: HTTP 2xx, or exit status 0 — the platform took the request;
  the top-up is expected in the ledger;
- ``succeeded``: the same, with a JSON answer ``{"status": "succeeded"}`` —
  the platform charged at once;
- ``declined``: the platform refused (HTTP 4xx but those below, a JSON answer
  ``{"status": "failed", "reason": "..."}``, or an exit status other than 0
  and 75); ``reason`` is shown to the owner;
- ``retry``: worth trying again later (timeouts, connection errors, HTTP 5xx,
  408, 425, 429, exit status 75, a command killed by a signal) — or the hook
  itself is misconfigured (HTTP 401, 403, 404, 405, 407, 415, a redirect, a
  command that cannot be started), which is logged as an error for the
  operator rather than blamed on the owner's card.

Header values are secrets: they are sent, never logged, never part of an answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from balancewatch import __version__
from balancewatch.config import Settings, TopupHookSettings
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.rules.compiled import CompiledRule
from balancewatch.topup.answer import (
    MAX_STORED,
    Answer,
    Hook,
    HookRequest,
    HookVerdict,
    answer_of_body,
    answer_of_http_error,
    header_key,
    json_object,
    one_line,
    payload,
    stated_reason,
)

MAX_BODY = 64 * 1024  # read at most this much of an answer
EX_TEMPFAIL = 75  # sysexits.h: "try again later", as mail delivery agents use it


def make_hook(settings: Settings) -> Hook | None:
    """The configured hook, or None when ``topup.hook`` names neither a URL nor a command."""
    hook = settings.topup.hook
    if hook.url:
        return HttpHook(hook)
    if hook.command:
        return CommandHook(hook.command, hook.timeout)
    return None


def configuration_problems(settings: Settings, rules: Sequence[CompiledRule]) -> list[Problem]:
    """A problem at each rule with ``topup`` when no hook is configured to carry its requests."""
    if settings.topup.hook.configured:
        return []
    where = settings.source or "config.yaml"
    return [
        Problem(
            rule.source,
            rule.line,
            "topup",
            f"rule {rule.id!r} asks for top-ups but no hook is configured: set topup.hook.url or "
            f"topup.hook.command in {where} (see docs/topup.md)",
        )
        for rule in rules
        if rule.topup is not None and rule.enabled
    ]


# --- HTTP ---------------------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it came: a POST is never re-sent elsewhere, nor turned into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpHook:
    """POST the request's JSON to ``topup.hook.url`` with an ``Idempotency-Key`` header.

    https URLs are verified against the system's CAs (plus ``ca_file``), host name
    included. Proxies from the environment (``https_proxy``, ``no_proxy``) apply.
    """

    def __init__(self, settings: TopupHookSettings) -> None:
        self.settings = settings
        self.url = settings.url
        self.timeout = settings.timeout.total_seconds()
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects)

    @property
    def name(self) -> str:
        return self.settings.describe()

    def _headers(self, request: HookRequest) -> dict[str, str]:
        """Configured headers first, then ours; raises OSError naming a header file that cannot be read."""
        headers = {name: value.get_secret_value() for name, value in self.settings.headers.items()}
        for name, path in self.settings.header_files.items():
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise OSError(
                    f"cannot read topup.hook.header_files.{name} {path}: {exc.strerror or exc}"
                ) from exc
            if any(c in value for c in "\r\n\0"):
                raise OSError(f"topup.hook.header_files.{name} {path}: the value must be one line")
            headers[name] = value
        headers.update(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"balancewatch/{__version__}",
                "Idempotency-Key": header_key(request.idem_key),
            }
        )
        return headers

    def call(self, request: HookRequest) -> Answer:
        """POST once; every failure becomes an Answer (nothing raised)."""
        try:
            headers = self._headers(request)
        except OSError as exc:
            return Answer(HookVerdict.retry, str(exc), misconfigured=True)
        body = json.dumps(payload(request)).encode()
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                text = _read(resp)
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                text = _read(exc)
            return answer_of_http_error(exc.code, str(exc.reason or ""), text, exc.headers)
        except urllib.error.URLError as exc:
            return Answer(HookVerdict.retry, f"{self.name}: {_why(exc.reason)}")
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            return Answer(HookVerdict.retry, f"{self.name}: {_why(exc)}")
        return answer_of_body(text)


def _read(resp: Any) -> str:
    try:
        data = resp.read(MAX_BODY)
    except (OSError, http.client.HTTPException):
        return ""
    return data.decode("utf-8", errors="replace") if data else ""


def _why(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer within topup.hook.timeout"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"the certificate was not accepted ({reason.verify_message}); "
            "set topup.hook.ca_file for a private CA"
        )
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


# --- a command ----------------------------------------------------------------------------------------


def command_environment(environ: Mapping[str, str], request: HookRequest) -> dict[str, str]:
    """The command's environment: ours without balancewatch's own settings (they may hold
    secrets such as the SMTP password), plus the request's id and key."""
    env = {k: v for k, v in environ.items() if not k.upper().startswith("BALANCEWATCH_")}
    env["BALANCEWATCH_TOPUP_ID"] = str(request.id)
    env["BALANCEWATCH_IDEMPOTENCY_KEY"] = request.idem_key
    return env


class CommandHook:
    """Run ``topup.hook.command`` with the request's JSON on stdin.

    Exit status 0: accepted (stdout may hold a JSON answer, as an HTTP body would);
    75: try again later; killed by a signal or over ``timeout``: tried again;
    any other status: refused, with the JSON ``reason`` on stdout, else the last
    line of stderr. The command runs in a session of its own, so a timeout stops
    everything it started.
    """

    def __init__(
        self, argv: Sequence[str], timeout: timedelta, environ: Mapping[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.timeout = timeout.total_seconds()
        self.environ = environ

    @property
    def name(self) -> str:
        return f"command {self.argv[0]}"

    def call(self, request: HookRequest) -> Answer:
        """Run once; every failure becomes an Answer (nothing raised)."""
        env = command_environment(os.environ if self.environ is None else self.environ, request)
        data = json.dumps(payload(request)).encode()
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return Answer(
                HookVerdict.retry,
                f"cannot run {self.argv[0]}: {exc.strerror or exc}; check topup.hook.command",
                misconfigured=True,
            )
        try:
            out, err = proc.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return Answer(
                HookVerdict.retry, f"{self.name} did not finish within topup.hook.timeout; it was stopped"
            )
        stdout = out[:MAX_BODY].decode("utf-8", errors="replace")
        stderr = err[-MAX_BODY:].decode("utf-8", errors="replace")
        code = proc.returncode
        if code == 0:
            return answer_of_body(stdout)
        last = _last_line(stderr)
        stored = (stdout or stderr)[:MAX_STORED] or None
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Answer(HookVerdict.retry, f"{self.name} was killed by {name}", stored)
        if code == EX_TEMPFAIL:
            return Answer(
                HookVerdict.retry,
                f"{self.name} asked to try again later{f': {last}' if last else ''}",
                stored,
            )
        reason = stated_reason(json_object(stdout)) or last or f"the top-up command exited with status {code}"
        return Answer(HookVerdict.declined, reason, stored)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(lines[-1]) if lines else ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command's whole session and reap it; output still held open elsewhere is abandoned."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


def check_topup_hook(settings: Settings, rules: Sequence[CompiledRule]) -> None:
    """Raise ProblemsError when one of ``rules`` has ``topup`` and no hook is configured."""
    problems = configuration_problems(settings, rules)
    if problems:
        raise ProblemsError(problems)
