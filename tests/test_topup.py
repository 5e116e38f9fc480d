"""Automatic top-up: a rule's drop becomes one request, the hook is called, the answer recorded,
a failure emailed to the owner once; on SQLite and PostgreSQL.

The hook is real: an HTTP server on loopback that records every POST and answers
as each test says, or a script run as a command. Time is the test's clock; the
only waits are on a process or a condition, with a deadline.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from balancewatch.cli import main
from balancewatch.config import Settings, load_settings
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import ledger
from balancewatch.store import topup_requests as topups
from balancewatch.store.db import make_engine
from balancewatch.topup.answer import HookRequest, HookVerdict, answer_of_body, answer_of_http_error
from balancewatch.topup.hook import CommandHook
from balancewatch.topup.notify import email_key
from tests.conftest import Clock, write_rules
from tests.helpers import account, outbox, post

RULES = """
alerts:
  - id: auto-recharge
    description: Recharge $200 when the balance reaches $50
    accounts: {currency: USD}
    below: [50]
    topup: {amount: 200}
"""
TOKEN = "Bearer test-token-123"
DEADLINE = 20.0


# --- a real hook ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One POST the hook received."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


@dataclass
class HookServer:
    """An HTTP endpoint on loopback: records each POST, answers with the next scripted answer
    (then ``default``), and runs ``on_call`` (if set) before answering."""

    calls: list[Call] = field(default_factory=list)
    answers: deque[tuple[int, str, dict[str, str]]] = field(default_factory=deque)
    default: tuple[int, str, dict[str, str]] = (202, '{"status": "requested", "charge": "ch_1"}', {})
    on_call: Callable[[Call], None] | None = None

    def answer(self, status: int, body: str = "", **headers: str) -> None:
        self.answers.append((status, body, headers))

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                call = Call(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(data))
                owner.calls.append(call)
                if owner.on_call is not None:
                    owner.on_call(call)
                status, body, headers = owner.answers.popleft() if owner.answers else owner.default
                payload = body.encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for the serving loop to look up.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/topups"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(DEADLINE)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, rules_dir: Path, db_url: str, hook: HookServer) -> dict[str, str]:
    """The settings of every test, as the environment `balancewatch` reads them."""
    write_rules(rules_dir, RULES)
    return {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_RULES_DIR": str(rules_dir),
        "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
        "BALANCEWATCH_DATABASE__URL": db_url,
        "BALANCEWATCH_DELIVERY__FROM": "Balance alerts <alerts@platform.example>",
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_TOPUP__HOOK__URL": hook.url,
        "BALANCEWATCH_TOPUP__HOOK__HEADERS__AUTHORIZATION": TOKEN,
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(None, env)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveSet:
    """The rules and the shipped templates, loaded once: loading renders every template's samples."""
    return load_set(write_rules(tmp_path_factory.mktemp("rules"), RULES).parent, shipped.templates_dir())


@pytest.fixture
def pipeline(engine: Engine, settings: Settings, live: LiveSet) -> Pipeline:
    return build_pipeline(engine, settings, live)


def fund(engine: Engine, account_id: str, dollars: int, clock: Clock) -> None:
    post(engine, account_id, "USD", dollars * 100, clock())


def spend(engine: Engine, account_id: str, dollars: int, clock: Clock) -> None:
    post(engine, account_id, "USD", -dollars * 100, clock.advance(minutes=1))


def requests_made(engine: Engine) -> list[topups.Request]:
    """Every top-up request, oldest first."""
    with engine.connect() as conn:
        return list(reversed(topups.listing(conn, limit=1000)))


def low_account(engine: Engine, clock: Clock, account_id: str = "acme") -> None:
    """An account funded with $300 that has just spent $260: $40, below the $50 minimum."""
    account(engine, account_id)
    fund(engine, account_id, 300, clock)
    spend(engine, account_id, 260, clock)


def delivered_emails(pipeline: Pipeline, clock: Clock, at: datetime | None = None) -> list[EmailMessage]:
    """Deliver what is due (at ``at``, else the clock's now) through the file transport;
    every .eml written so far, parsed."""
    pipeline.deliver(max(clock(), at or clock()))
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(pipeline.settings.mail_dir.glob("*.eml"))
    ]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


# --- one request per episode -------------------------------------------------------------------------


def test_a_drop_to_the_minimum_posts_one_request_whose_idempotency_key_is_the_stored_key(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    assert pipeline.evaluate(clock()).topups == {"auto-recharge": 1}
    assert [r.status for r in requests_made(engine)] == ["pending"]

    stats = pipeline.topups(clock())

    assert stats.outcomes == {"requested": 1}
    [request] = requests_made(engine)
    [call] = hook.calls
    assert call.headers["idempotency-key"] == request.idem_key
    assert call.headers["authorization"] == TOKEN
    assert call.headers["content-type"] == "application/json"
    assert call.body == {
        "id": request.id,
        "idempotency_key": request.idem_key,
        "account": "acme",
        "currency": "USD",
        "amount": "200.00",
        "amount_minor": 20_000,
        "rule": "auto-recharge",
        "requested_at": clock().isoformat().replace("+00:00", "Z"),
        "attempt": 1,
    }
    assert (request.status, request.attempts) == ("requested", 1)
    assert request.hook_response == '{"status": "requested", "charge": "ch_1"}'
    assert outbox(engine) == []  # a top-up rule emails only when the charge fails


def test_no_second_request_is_made_while_one_is_open(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    pipeline.topups(clock())
    spend(engine, "acme", 30, clock)  # $10: lower still, same episode

    for _ in range(3):
        pipeline.evaluate(clock.advance(minutes=20))
        pipeline.topups(clock())

    assert [r.status for r in requests_made(engine)] == ["requested"]
    assert len(hook.calls) == 1


def test_the_top_up_arriving_in_the_ledger_succeeds_the_request_and_a_later_drop_makes_a_new_one(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    pipeline.topups(clock())
    fund(engine, "acme", 200, clock)  # the platform charged the card: $240

    assert pipeline.topups(clock.advance(seconds=5)).arrived == 1
    assert [r.status for r in requests_made(engine)] == ["succeeded"]
    pipeline.evaluate(clock.advance(minutes=1))  # $240 is above the re-arm point ($55): the step re-arms
    spend(engine, "acme", 200, clock)  # $40 again: a new episode
    assert pipeline.evaluate(clock.advance(minutes=1)).topups == {"auto-recharge": 1}
    pipeline.topups(clock())

    first, second = requests_made(engine)
    assert (first.status, second.status) == ("succeeded", "requested")
    assert [c.headers["idempotency-key"] for c in hook.calls] == [first.idem_key, second.idem_key]
    assert first.idem_key != second.idem_key


def test_a_top_up_posted_to_a_subaccount_counts_for_its_main_account(
    engine: Engine, pipeline: Pipeline, clock: Clock
) -> None:
    low_account(engine, clock)
    account(engine, "acme-eu", parent_id="acme")
    pipeline.evaluate(clock())
    pipeline.topups(clock())

    post(engine, "acme-eu", "USD", 20_000, clock.advance(minutes=1))  # moves acme's balance

    assert pipeline.topups(clock()).arrived == 1
    assert [r.status for r in requests_made(engine)] == ["succeeded"]


def test_a_credit_that_arrives_before_the_hook_is_called_means_the_hook_is_never_called(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    fund(engine, "acme", 100, clock)  # the owner topped up by hand first

    stats = pipeline.topups(clock.advance(seconds=1))

    assert (stats.arrived, hook.calls) == (1, [])
    assert [r.status for r in requests_made(engine)] == ["succeeded"]


# --- failures ---------------------------------------------------------------------------------------


def test_a_refusal_fails_the_request_and_emails_the_owner_once(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    hook.answer(402, '{"error": {"message": "Your card was declined."}}')

    stats = pipeline.topups(clock())

    assert (stats.outcomes, stats.emails) == ({"failed": 1}, 1)
    [request] = requests_made(engine)
    assert (request.status, request.last_error) == ("failed", "Your card was declined.")
    for _ in range(2):  # later cycles neither ask again in this episode nor email again
        pipeline.evaluate(clock.advance(minutes=20))
        pipeline.topups(clock())
    assert len(hook.calls) == 1
    [row] = outbox(engine)
    assert (row.idem_key, row.kind, row.recipients) == (
        email_key(request.id),
        "topup-failed",
        ("acme@owner.example",),
    )
    [mail] = delivered_emails(pipeline, clock)
    assert mail["To"] == "acme@owner.example"
    assert mail["Subject"] == "Acme: automatic recharge of $200.00 failed"
    body = text_of(mail)
    assert "The payment platform refused the charge: Your card was declined." in body
    assert "Your USD balance is $40.00." in body
    assert "add credit yourself" in body
    html = mail.get_body(("html",))
    assert html is not None and "Your card was declined." in str(html.get_content())  # type: ignore[attr-defined]


def test_an_accepted_request_whose_credit_never_arrives_fails_after_await_credit_and_emails_once(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    pipeline.topups(clock())  # accepted: now waiting for the credit
    accepted_at = clock()

    assert pipeline.topups(clock.advance(hours=23, minutes=59)).outcomes == {}
    assert [r.status for r in requests_made(engine)] == ["requested"]

    stats = pipeline.topups(clock.advance(minutes=2))

    assert (stats.outcomes, stats.emails) == ({"failed": 1}, 1)
    [request] = requests_made(engine)
    assert request.status == "failed"
    assert request.last_error == ("the payment platform accepted the request but no top-up arrived within 1d")
    assert pipeline.topups(clock.advance(hours=1)).outcomes == {}  # told once
    [row] = outbox(engine)
    assert (row.idem_key, row.kind) == (email_key(request.id), "topup-failed")
    [mail] = delivered_emails(pipeline, clock)
    assert "The charge was accepted, but the credit never reached your balance" in text_of(mail)
    assert clock() - accepted_at > timedelta(hours=24)
    assert len(hook.calls) == 1


def test_a_json_answer_that_says_failed_is_a_refusal(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    hook.answer(200, '{"status": "failed", "reason": "monthly limit reached"}')

    pipeline.topups(clock())

    assert [(r.status, r.last_error) for r in requests_made(engine)] == [("failed", "monthly limit reached")]
    assert [m.kind for m in outbox(engine)] == ["topup-failed"]


def test_a_5xx_answer_is_retried_with_backoff_under_the_same_key_until_accepted(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    hook.answer(503, "upstream busy")
    hook.answer(500, "")
    start = clock()

    assert pipeline.topups(start).outcomes == {"retry": 1}
    [waiting] = requests_made(engine)
    assert waiting.status == "pending"
    assert timedelta(seconds=27) <= waiting.next_attempt_at - start <= timedelta(seconds=30)
    assert "HTTP 503" in (waiting.last_error or "")
    assert pipeline.topups(clock.advance(seconds=20)).outcomes == {}  # not due yet
    assert pipeline.topups(waiting.next_attempt_at).outcomes == {"retry": 1}
    [again] = requests_made(engine)
    assert timedelta(seconds=54) <= again.next_attempt_at - waiting.next_attempt_at <= timedelta(seconds=60)
    assert pipeline.topups(again.next_attempt_at).outcomes == {"requested": 1}

    [done] = requests_made(engine)
    assert (done.status, done.attempts) == ("requested", 3)
    assert [c.headers["idempotency-key"] for c in hook.calls] == [done.idem_key] * 3
    assert [c.body["attempt"] for c in hook.calls] == [1, 2, 3]
    assert outbox(engine) == []


def test_a_request_the_platform_never_accepts_fails_after_give_up_after(
    engine: Engine, env: dict[str, str], live: LiveSet, hook: HookServer, clock: Clock
) -> None:
    settings = load_settings(None, {**env, "BALANCEWATCH_TOPUP__RETRY__GIVE_UP_AFTER": "10m"})
    pipeline = build_pipeline(engine, settings, live)
    hook.default = (503, "down for maintenance", {})
    low_account(engine, clock)
    pipeline.evaluate(clock())

    pipeline.topups(clock())
    stats = pipeline.topups(clock.advance(minutes=11))

    assert (stats.outcomes, stats.emails) == ({"failed": 1}, 1)
    [request] = requests_made(engine)
    assert request.status == "failed"
    assert request.last_error == (
        "the payment platform did not accept the request after 2 attempts over 10m "
        "(last: HTTP 503 Service Unavailable: down for maintenance)"
    )
    [mail] = delivered_emails(pipeline, clock)
    assert "We could not get the charge through" in text_of(mail)


def test_topup_fail_reports_a_failure_and_the_owner_is_emailed_once(
    engine: Engine,
    env: dict[str, str],
    pipeline: Pipeline,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    pipeline.topups(clock())  # accepted: waiting for the credit
    [request] = requests_made(engine)

    first = cli(capsys, env, "topup", "fail", str(request.id), "--reason", "Card expired")
    second = cli(capsys, env, "topup", "fail", str(request.id), "--reason", "Card expired")

    told = f"the failure email to acme@owner.example is in the outbox (topup-failed/{request.id})"
    assert first == (0, f"request {request.id} (acme $200.00) failed: {told}; the daemon sends it\n", "")
    assert second == (
        1,
        "",
        f"balancewatch topup fail: request {request.id} is failed, not open (pending or requested): "
        "nothing changed\n",
    )
    [mail] = delivered_emails(pipeline, clock, datetime.now(UTC))  # the command ran on the real clock
    assert "The charge failed: Card expired" in text_of(mail)
    assert [(r.status, r.last_error) for r in requests_made(engine)] == [("failed", "Card expired")]


def cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    """Run ``balancewatch ARGV`` in this process; return (exit status, stdout, stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        code = main(list(argv), env)
    finally:
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


def test_topup_list_shows_each_request_with_its_status(
    engine: Engine, env: dict[str, str], pipeline: Pipeline, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    pipeline.topups(clock())

    code, out, _ = cli(capsys, env, "topup", "list", "--json")

    assert code == 0
    [row] = json.loads(out)
    assert {k: row[k] for k in ("status", "account", "currency", "amount", "amount_minor", "attempts")} == {
        "status": "requested",
        "account": "acme",
        "currency": "USD",
        "amount": "200.00",
        "amount_minor": 20_000,
        "attempts": 1,
    }
    assert (
        cli(capsys, env, "topup", "list", "--status", "failed")[1]
        == "no top-up requests with status failed\n"
    )


# --- restarts, instances, stopping ------------------------------------------------------------------


def test_no_duplicate_request_across_restarts(
    engine: Engine, db_url: str, settings: Settings, live: LiveSet, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    build_pipeline(engine, settings, live).evaluate(clock())  # decided, then the process died

    for minutes in (1, 2, 3):  # three restarts, each a fresh process state over the same database
        fresh = make_engine(db_url)
        restarted = build_pipeline(fresh, settings, live)
        restarted.evaluate(clock.advance(minutes=minutes))
        restarted.topups(clock())
        fresh.dispose()

    assert [r.status for r in requests_made(engine)] == ["requested"]
    assert len(hook.calls) == 1


def test_an_instance_that_dies_mid_call_is_taken_over_after_the_lease_with_the_same_key(
    engine: Engine, pipeline: Pipeline, settings: Settings, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock)
    pipeline.evaluate(clock())
    with engine.begin() as conn:  # another instance claims the request, calls, and dies
        claimed = topups.claim(conn, clock(), settings.topup.lease)
    assert claimed is not None

    assert pipeline.topups(clock.advance(seconds=30)).outcomes == {}  # its lease still holds
    assert pipeline.topups(clock.advance(minutes=2)).outcomes == {"requested": 1}

    [request] = requests_made(engine)
    assert (request.status, request.attempts) == ("requested", 2)
    assert [c.headers["idempotency-key"] for c in hook.calls] == [claimed.idem_key]


def test_stopping_lets_the_call_in_flight_finish_and_calls_no_more(
    engine: Engine, pipeline: Pipeline, hook: HookServer, clock: Clock
) -> None:
    low_account(engine, clock, "acme")
    low_account(engine, clock, "globex")
    pipeline.evaluate(clock())
    hook.on_call = lambda call: pipeline.stopping.set()  # SIGTERM arrives while the platform answers

    stats = pipeline.topups(clock())

    assert stats.outcomes == {"requested": 1}
    assert sorted(r.status for r in requests_made(engine)) == ["pending", "requested"]
    assert len(hook.calls) == 1


def test_run_once_twice_makes_one_request_and_one_call(
    engine: Engine, env: dict[str, str], hook: HookServer, clock: Clock, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    account(engine, "acme")
    with Session(engine) as s:
        ledger.post(s, "acme", "USD", 30_000, "top-up", occurred_at=now, now=now)
        ledger.post(s, "acme", "USD", -26_000, "usage", occurred_at=now, now=now)
        s.commit()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
    process_env.update(env)

    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "balancewatch", "run", "--once"],
            env=process_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    [request] = requests_made(engine)
    assert request.status == "requested"
    assert [c.headers["idempotency-key"] for c in hook.calls] == [request.idem_key]


# --- a command as the hook --------------------------------------------------------------------------

SCRIPT = """\
import json, os, sys
request = json.load(sys.stdin)
given = ("BALANCEWATCH_IDEMPOTENCY_KEY", "BALANCEWATCH_TOPUP_ID")
leaked = sorted(k for k in os.environ if k.startswith("BALANCEWATCH_") and k not in given)
key = os.environ.get("BALANCEWATCH_IDEMPOTENCY_KEY")
with open(sys.argv[1], "a") as log:
    log.write(json.dumps({"request": request, "key": key, "leaked": leaked}) + "\\n")
account = request["account"]
if account == "declined":
    print("card declined by issuer", file=sys.stderr)
    sys.exit(2)
if account == "later":
    sys.exit(75)
if account == "hangs":
    import threading
    threading.Event().wait()  # hangs until the hook's timeout stops it
print(json.dumps({"status": "requested"}))
"""


@pytest.fixture
def script(tmp_path: Path) -> tuple[list[str], Path]:
    """A charging script (its argv) and the file where it logs what it was given."""
    path = tmp_path / "charge.py"
    path.write_text(SCRIPT)
    calls = tmp_path / "calls.jsonl"
    return [sys.executable, str(path), str(calls)], calls


def test_a_command_hook_gets_the_json_on_stdin_and_its_exit_status_decides(
    engine: Engine, env: dict[str, str], live: LiveSet, script: tuple[list[str], Path], clock: Clock
) -> None:
    argv, calls = script
    command_env = {k: v for k, v in env.items() if k != "BALANCEWATCH_TOPUP__HOOK__URL"}
    settings = load_settings(None, {**command_env, "BALANCEWATCH_TOPUP__HOOK__COMMAND": json.dumps(argv)})
    pipeline = build_pipeline(engine, settings, live)
    for name in ("acme", "declined", "later"):
        low_account(engine, clock, name)
    pipeline.evaluate(clock())

    stats = pipeline.topups(clock())

    assert stats.outcomes == {"requested": 1, "failed": 1, "retry": 1}
    by_account = {r.account_id: r for r in requests_made(engine)}
    assert {a: (r.status, r.last_error) for a, r in by_account.items()} == {
        "acme": ("requested", None),
        "declined": ("failed", "card declined by issuer"),
        "later": ("pending", "command " + sys.executable + " asked to try again later"),
    }
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    assert {e["request"]["account"]: e["key"] for e in logged} == {
        a: r.idem_key for a, r in by_account.items()
    }
    assert all(e["request"]["amount"] == "200.00" for e in logged)
    assert all(e["leaked"] == [] for e in logged)  # the command never sees balancewatch's settings
    [mail] = delivered_emails(pipeline, clock)
    assert mail["To"] == "declined@owner.example"
    assert "card declined by issuer" in text_of(mail)


def test_a_command_that_hangs_is_stopped_at_the_timeout_and_retried(
    script: tuple[list[str], Path], clock: Clock
) -> None:
    argv, _ = script
    hook = CommandHook(argv, timedelta(milliseconds=500), environ={"PATH": os.environ.get("PATH", "")})
    request = HookRequest(1, "topup/r/hangs/USD/5000/1", "r", "hangs", "USD", 20_000, clock(), 1)

    answer = hook.call(request)

    assert answer.outcome is HookVerdict.retry
    assert (
        answer.reason == f"command {sys.executable} did not finish within topup.hook.timeout; it was stopped"
    )


# --- what an answer means ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "reason"),
    [
        (402, '{"reason": "insufficient funds"}', {}, HookVerdict.declined, "insufficient funds"),
        (422, "Card expired\n", {}, HookVerdict.declined, "Card expired"),
        (
            400,
            "<html>bad</html>",
            {},
            HookVerdict.declined,
            "the payment platform refused the charge (HTTP 400 Bad)",
        ),
        (429, "", {"Retry-After": "120"}, HookVerdict.retry, "HTTP 429 Too Many"),
        (503, '{"message": "maintenance"}', {}, HookVerdict.retry, "HTTP 503 Down: maintenance"),
        (401, "", {}, HookVerdict.retry, "HTTP 401 Unauthorized; check topup.hook.headers (credentials)"),
        (404, "", {}, HookVerdict.retry, "HTTP 404 Not Found; check topup.hook.url"),
    ],
)
def test_an_http_error_answer_is_a_refusal_only_when_the_platform_refused_the_charge(
    status: int, body: str, headers: dict[str, str], outcome: HookVerdict, reason: str
) -> None:
    phrase = {400: "Bad", 429: "Too Many", 503: "Down", 401: "Unauthorized", 404: "Not Found"}.get(status, "")
    message = email.message.Message()
    for name, value in headers.items():
        message[name] = value
    answer = answer_of_http_error(status, phrase, body, message)
    assert (answer.outcome, answer.reason) == (outcome, reason)
    assert answer.misconfigured is (status in (401, 404))
    if headers:
        assert answer.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("", HookVerdict.accepted),
        ("accepted", HookVerdict.accepted),
        ('{"status": "pending"}', HookVerdict.accepted),
        ('{"status": "succeeded"}', HookVerdict.succeeded),
        ('{"status": "failed"}', HookVerdict.declined),
    ],
)
def test_a_2xx_answer_is_accepted_unless_its_json_says_otherwise(body: str, outcome: HookVerdict) -> None:
    assert answer_of_body(body).outcome is outcome


# --- configuration ----------------------------------------------------------------------------------


def test_check_reports_a_topup_rule_without_a_hook_and_passes_with_one(
    tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_rules(rules_dir, RULES)
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_RULES_DIR": str(rules_dir),
        "BALANCEWATCH_LOG__LEVEL": "warning",
    }

    code, _, err = cli(capsys, env, "check")

    assert code == 1
    assert err.splitlines() == [
        f"{path}:3: topup: rule 'auto-recharge' asks for top-ups but no hook is configured: set "
        "topup.hook.url or topup.hook.command in config.yaml (see docs/topup.md)",
        "check failed: 1 problem",
    ]
    hooked = {**env, "BALANCEWATCH_TOPUP__HOOK__URL": "https://billing.example/topups"}
    assert cli(capsys, hooked, "check")[0] == 0


def test_a_topup_template_is_checked_with_topup_failed_samples(tmp_path: Path, rules_dir: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    (templates / "card-failed").mkdir()
    (templates / "card-failed" / "subject.txt").write_text("Recharge of {{ topup.amount | money }} failed\n")
    (templates / "card-failed" / "body.txt").write_text("Reason: {{ topup.reason }}\n{{ topup.card }}\n")
    write_rules(
        rules_dir, RULES.replace("topup: {amount: 200}", "topup: {amount: 200, template: card-failed}")
    )

    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir, templates)

    assert [str(p) for p in caught.value.problems] == [
        f"{templates}/card-failed/body.txt:2: 'dict object' has no attribute 'card'"
    ]
