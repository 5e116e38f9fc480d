"""The outbox as an operator uses it: list with filters, show every attempt, retry what was parked.

Run in-process through ``main(argv, environ)`` on SQLite and PostgreSQL; delivery goes through
``run --once`` to the real SMTP server on loopback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from balancewatch import outbox
from balancewatch.cli import main
from balancewatch.config import RetrySettings
from balancewatch.deliver.outcome import DELIVERED, Attempt, settle
from balancewatch.store.tables import OUTBOX_TABLE
from tests.smtpserver import SmtpServer

OWNER, GONE = "owner@acme.example", "gone@acme.example"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` in-process (plus ``env``) and capture its output.

    No rules and no templates: ``run --once`` then only delivers, and starts in a blink.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    base = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_RULES_DIR": str(tmp_path / "rules"),
        "BALANCEWATCH_TEMPLATES_DIR": str(tmp_path / "templates"),
    }

    def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        code = main(list(argv), {**base, **(env or {})})
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


@pytest.fixture
def cli(run: Cli, db_url: str) -> Cli:
    """Like ``run``, against the parametrized database (SQLite and PostgreSQL)."""

    def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
        return run(*argv, env={"BALANCEWATCH_DATABASE__URL": db_url, **(env or {})})

    return invoke


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


def smtp_env(server: SmtpServer) -> dict[str, str]:
    return {f"BALANCEWATCH_{k.upper()}": v for k, v in server.env().items()}


def decide(
    engine: Engine,
    key: str,
    at: datetime,
    recipients: Sequence[str] = (OWNER, GONE),
    account: str | None = "acme",
    rule: str | None = "ladder",
) -> None:
    """Record one alert in the outbox as the daemon does, decided at ``at``."""
    message = outbox.NewMessage(
        idem_key=key,
        kind="alert",
        sender="alerts@platform.example",
        recipients=tuple(recipients),
        subject=f"Your USD balance is low ({key})",
        text="Your USD balance has fallen to $90.00.\n",
        html=None,
        rule_id=rule,
        account_id=account,
        currency="USD" if account else None,
    )
    with engine.begin() as conn:
        outbox.add(conn, [message], at, "platform.example")


def attempt(engine: Engine, key: str, at: datetime, refused: dict[str, str]) -> None:
    """One delivery attempt of ``key`` through the worker's own claim, settle and record:
    the addresses in ``refused`` are refused for good with that reply, the others get it."""
    with engine.begin() as conn:
        [row] = outbox.claim(conn, "test-worker", at, 1, timedelta(minutes=5), key)
        tried = {
            a: Attempt(False, refused[a], permanent=True) if a in refused else DELIVERED
            for a in row.due_recipients
        }
        assert outbox.record(conn, row.id, "test-worker", settle(row, tried, at, RetrySettings()))


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(OUTBOX_TABLE.c.idem_key, OUTBOX_TABLE.c.status)).all())  # type: ignore[arg-type]


# --- retry through the real SMTP server ----------------------------------------------------------


def test_a_parked_recipient_gets_the_message_after_retry_and_the_others_not_twice(
    cli: Cli, engine: Engine, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse[GONE] = "550 5.2.2 mailbox full"
    decide(engine, "alert/ladder/acme/USD/10000/1/0", datetime.now(UTC))
    assert cli("run", "--once", env=smtp_env(smtp_server)).code == 0
    [first] = smtp_server.wait_for(1)
    assert first.rcpt_tos == (OWNER,)
    assert statuses(engine) == {"alert/ladder/acme/USD/10000/1/0": "parked"}

    del smtp_server.refuse[GONE]  # the owner emptied the mailbox
    retried = cli("outbox", "retry", "1")
    assert (retried.code, retried.err) == (0, "")
    assert retried.out.splitlines() == [
        f"re-queued #1 alert/ladder/acme/USD/10000/1/0: {GONE} "
        f"(not sent again to {OWNER}: already delivered)",
        "1 message re-queued for 1 recipient; the next delivery round sends them",
    ]
    assert statuses(engine) == {"alert/ladder/acme/USD/10000/1/0": "pending"}

    assert cli("run", "--once", env=smtp_env(smtp_server)).code == 0
    received = smtp_server.wait_for(2)
    assert [r.rcpt_tos for r in received] == [(OWNER,), (GONE,)]
    assert received[0].message["Message-ID"] == received[1].message["Message-ID"]
    assert statuses(engine) == {"alert/ladder/acme/USD/10000/1/0": "sent"}
    shown = ok(cli("outbox", "show", "1"))
    rows = {line.split()[0]: line.split()[1:3] for line in shown.splitlines() if "@acme.example " in line}
    assert rows == {OWNER: ["sent", "1"], GONE: ["sent", "1"]}


def test_retry_of_a_message_that_is_not_parked_says_so_and_exits_1(cli: Cli, engine: Engine) -> None:
    now = datetime.now(UTC)
    decide(engine, "k/sent", now)
    attempt(engine, "k/sent", now, {})
    decide(engine, "k/pending", now)
    decide(engine, "k/sending", now)
    with engine.begin() as conn:  # a daemon holds it, mid-send
        assert len(outbox.claim(conn, "host-b:7", now, 1, timedelta(minutes=5), "k/sending")) == 1
    result = cli("outbox", "retry", "1", "k/pending", "3", "99")
    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [
        "#1 is sent; nothing to retry",
        "#2 is pending: its delivery is still under way; nothing to retry",
        "#3 is being sent now; nothing to retry",
        "#99 is not in the outbox; `balancewatch outbox list` shows the ids",
    ]
    assert statuses(engine) == {"k/sent": "sent", "k/pending": "pending", "k/sending": "sending"}


def test_retry_is_idempotent_and_succeeds_if_any_message_could_be_retried(cli: Cli, engine: Engine) -> None:
    now = datetime.now(UTC)
    for key in ("k/parked", "k/sent"):
        decide(engine, key, now)
    attempt(engine, "k/parked", now, {OWNER: "550 no", GONE: "550 no"})
    attempt(engine, "k/sent", now, {})

    mixed = cli("outbox", "retry", "k/parked", "2", "1")
    assert mixed.code == 0
    assert mixed.out.splitlines()[0] == f"re-queued #1 k/parked: {OWNER}, {GONE}"
    assert mixed.err == "#2 is sent; nothing to retry\n"
    again = cli("outbox", "retry", "1")
    assert (again.code, again.err) == (
        1,
        "#1 is pending: its delivery is still under way; nothing to retry\n",
    )

    [row] = json.loads(ok(cli("outbox", "list", "--json", "--status", "pending")))
    assert (row["attempts"], row["last_error"]) == (0, f"{OWNER}, {GONE}: 550 no")
    assert {a: (e["status"], e["attempts"], e["error"]) for a, e in row["deliveries"].items()} == {
        OWNER: ("pending", 0, "550 no"),
        GONE: ("pending", 0, "550 no"),
    }
    assert datetime.fromisoformat(row["next_attempt_at"]) <= datetime.now(UTC)


def test_retry_parked_with_filters_requeues_only_the_matching_parked_messages(
    cli: Cli, engine: Engine
) -> None:
    now = datetime.now(UTC)
    rows = [
        ("a/ladder/new", "acme", "ladder", now),
        ("b/ladder/new", "beta", "ladder", now),
        ("a/zero/new", "acme", "zero", now),
        ("a/ladder/old", "acme", "ladder", now - timedelta(days=3)),
        ("a/ladder/sent", "acme", "ladder", now),
    ]
    for key, account, rule, at in rows:
        decide(engine, key, at, account=account, rule=rule)
        attempt(engine, key, at, {} if key.endswith("sent") else {GONE: "550 no such user"})

    one = cli("outbox", "retry", "--parked", "--account", "acme", "--rule", "ladder", "--since", "1d")
    assert ok(one).splitlines()[0] == f"re-queued #1 a/ladder/new: {GONE} (not sent again to {OWNER}: " + (
        "already delivered)"
    )
    assert statuses(engine) == {
        "a/ladder/new": "pending",
        "b/ladder/new": "parked",
        "a/zero/new": "parked",
        "a/ladder/old": "parked",
        "a/ladder/sent": "sent",
    }
    since = (now - timedelta(days=4)).date().isoformat()
    rest = json.loads(ok(cli("outbox", "retry", "--parked", "--since", since, "--json")))
    assert [r["idem_key"] for r in rest["requeued"]] == ["b/ladder/new", "a/zero/new", "a/ladder/old"]
    assert rest["requeued"][0]["recipients"] == [GONE]
    assert rest["left"] == []
    assert ok(cli("outbox", "retry", "--parked")) == "nothing to retry: no parked message matches\n"


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "give the ids of parked messages, or --parked to retry every parked message"),
        (["1", "--parked"], "give message ids or --parked, not both"),
        (
            ["1", "--account", "acme"],
            "--account, --rule and --since narrow --parked; with ids, leave them out",
        ),
        (["--parked", "--since", "soon"], "argument --since: 'soon' is neither a duration such as 2h or 1d"),
    ],
)
def test_retry_without_a_clear_target_is_a_usage_error(run: Cli, argv: list[str], complaint: str) -> None:
    result = run("outbox", "retry", *argv)
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("usage: balancewatch outbox retry")
    assert complaint in result.err


# --- list ------------------------------------------------------------------------------------------


def test_list_filters_by_status_account_rule_and_time_newest_first(cli: Cli, engine: Engine) -> None:
    now = datetime.now(UTC)
    rows = [
        ("a/ladder/old", "acme", "ladder", now - timedelta(days=2), {}),
        ("a/ladder/parked", "acme", "ladder", now - timedelta(hours=1), {GONE: "550 no"}),
        ("b/ladder/sent", "beta", "ladder", now - timedelta(minutes=30), {}),
        ("a/zero/sent", "acme", "zero", now - timedelta(minutes=10), {}),
        ("a/ladder/pending", "acme", "ladder", now, None),
    ]
    for key, account, rule, at, refused in rows:
        decide(engine, key, at, account=account, rule=rule)
        if refused is not None:
            attempt(engine, key, at, refused)

    def keys(*argv: str) -> list[str]:
        return [r["idem_key"] for r in json.loads(ok(cli("outbox", "list", "--json", *argv)))]

    assert keys() == [key for key, *_ in reversed(rows)]
    assert keys("--status", "parked,pending") == ["a/ladder/pending", "a/ladder/parked"]
    assert keys("--status", "parked", "--status", "pending") == ["a/ladder/pending", "a/ladder/parked"]
    assert keys("--account", "acme", "--rule", "ladder", "--status", "sent") == ["a/ladder/old"]
    assert keys("--since", "2h") == ["a/ladder/pending", "a/zero/sent", "b/ladder/sent", "a/ladder/parked"]
    since = (now - timedelta(minutes=45)).isoformat()
    assert keys("--since", since, "--account", "acme") == ["a/ladder/pending", "a/zero/sent"]
    assert keys("--rule", "nope") == []

    text = ok(cli("outbox", "list", "--status", "parked")).splitlines()
    assert len(text) == 2
    assert text[1].split()[:5] == ["2", *text[1].split()[1:3], "parked", "1"]
    assert f"{OWNER} (sent), {GONE} (parked)" in text[1]


def test_a_queued_alert_shows_as_not_rendered_yet_until_the_render_stage_writes_it(
    cli: Cli, engine: Engine
) -> None:
    now = datetime.now(UTC)
    queued = outbox.NewMessage(
        "a/ladder/queued", "alert", "a@platform.example", (OWNER,), "", "", None,
        rule_id="ladder", account_id="acme", currency="USD", template="low-balance", context='{"v": 1}',
    )  # fmt: skip
    with engine.begin() as conn:
        outbox.add(conn, [queued], now, "platform.example")

    [listed] = json.loads(ok(cli("outbox", "list", "--json", "--status", "queued")))
    line = ok(cli("outbox", "list", "--status", "queued")).splitlines()[1]
    shown = ok(cli("outbox", "show", "a/ladder/queued"))

    assert (listed["status"], listed["template"], "context" in listed) == ("queued", "low-balance", False)
    assert "(not rendered yet)" in line
    fields = dict(line.split(None, 1) for line in shown.splitlines() if line[:1].isalpha() and "  " in line)
    assert (fields["status"], fields["template"], fields["subject"]) == (
        "queued",
        "low-balance",
        "(not rendered yet)",
    )


def test_list_says_how_many_more_match_beyond_the_limit(cli: Cli, engine: Engine) -> None:
    now = datetime.now(UTC)
    messages = [
        outbox.NewMessage(f"k/{i}", "alert", "a@platform.example", (OWNER,), f"s{i}", "t", None)
        for i in range(1, 1004)
    ]
    with engine.begin() as conn:
        outbox.add(conn, messages, now, "platform.example")

    lines = ok(cli("outbox", "list", "--limit", "2")).splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["1003", "1002"]
    assert lines[3:] == ["… and 1,001 more; use --limit or a filter"]
    listed = cli("outbox", "list", "--limit", "1", "--json", "--status", "pending")
    assert [row["id"] for row in json.loads(listed.out)] == [1003]
    assert (listed.code, listed.err) == (0, "… and 1,002 more; use --limit or a filter\n")
    assert "more" not in ok(cli("outbox", "list", "--limit", "1003"))
    assert "more" not in ok(cli("outbox", "list", "--status", "sent"))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (
            ["--status", "sent,lost"],
            "argument --status: invalid choice: 'lost' (choose from queued, pending, sending",
        ),
        (["--limit", "0"], "argument --limit: '0': write a whole number of rows, 1 or more"),
        (["--since", "yesterday"], "argument --since: 'yesterday' is neither a duration such as 2h or 1d"),
        (["--since", "3600"], "argument --since: '3600' is neither a duration such as 2h or 1d"),
    ],
)
def test_list_refuses_bad_filters_as_usage_errors(run: Cli, argv: list[str], complaint: str) -> None:
    result = run("outbox", "list", *argv)
    assert (result.code, result.out) == (2, "")
    assert complaint in result.err


# --- show ------------------------------------------------------------------------------------------


def test_show_gives_each_recipients_attempts_next_try_and_requeue(cli: Cli, engine: Engine) -> None:
    decided = datetime.now(UTC) - timedelta(hours=1)
    decide(engine, "k/1", decided, recipients=(OWNER, GONE, "grey@acme.example"))
    with engine.begin() as conn:
        [row] = outbox.claim(conn, "host-a:1", decided, 1, timedelta(minutes=5), "k/1")
        tried = {
            OWNER: DELIVERED,
            GONE: Attempt(False, "550 5.1.1 no such user", permanent=True),
            "grey@acme.example": Attempt(False, "451 4.7.1 Greylisted"),
        }
        update = settle(row, tried, decided, RetrySettings())
        assert outbox.record(conn, row.id, "host-a:1", update)
    assert update.next_attempt_at is not None

    shown = ok(cli("outbox", "show", "k/1")).splitlines()
    fields = {line[:12].strip(): line[14:] for line in shown[: shown.index("")]}
    assert fields["next attempt"] == update.next_attempt_at.isoformat()
    assert fields["gives up"] == (decided + timedelta(days=2)).isoformat()
    assert fields["worker"] == "host-a:1 (the last to try it)"
    assert fields["attempts"] == "1"
    header = next(line for line in shown if line.startswith("recipient"))
    assert header.split() == ["recipient", "state", "tries", "last", "try", "(UTC)", "next", "try",
                              "re-queued", "error"]  # fmt: skip
    table = {line.split()[0]: line.split()[1:] for line in shown if "@acme.example " in line}
    assert table[OWNER] == ["sent", "1", decided.isoformat(), "-", "-"]
    assert table[GONE] == ["parked", "1", decided.isoformat(), "-", "-", "550", "5.1.1", "no", "such", "user"]
    next_try = update.next_attempt_at.isoformat()
    assert table["grey@acme.example"] == [
        "pending", "1", decided.isoformat(), next_try, "-", "451", "4.7.1", "Greylisted"
    ]  # fmt: skip


# --- the give-up window after a retry ----------------------------------------------------------------


def requeue_old_parked_message(cli: Cli, engine: Engine) -> datetime:
    """A message decided three days ago (past the default two-day give-up window) whose second
    recipient was refused for good, then re-queued; returns when it was re-queued (about)."""
    decided = datetime.now(UTC) - timedelta(days=3)
    decide(engine, "k/old", decided)
    attempt(engine, "k/old", decided, {GONE: "550 5.2.2 mailbox full"})
    before = datetime.now(UTC)
    ok(cli("outbox", "retry", "k/old"))
    return before


def test_show_counts_a_requeued_recipients_give_up_window_from_the_retry(cli: Cli, engine: Engine) -> None:
    before = requeue_old_parked_message(cli, engine)
    shown = ok(cli("outbox", "show", "k/old")).splitlines()
    fields = {line[:12].strip(): line[14:] for line in shown[: shown.index("")]}
    gives_up = datetime.fromisoformat(fields["gives up"])
    assert before + timedelta(days=2) <= gives_up <= datetime.now(UTC) + timedelta(days=2)
    [gone] = [line.split() for line in shown if line.startswith(GONE)]
    assert gone[1:3] == ["pending", "0"]
    assert before <= datetime.fromisoformat(gone[5]) <= datetime.now(UTC)


def test_a_requeued_recipient_refused_for_now_is_tried_again_not_parked_at_once(
    cli: Cli, engine: Engine
) -> None:
    requeue_old_parked_message(cli, engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        [row] = outbox.claim(conn, "test-worker", now, 1, timedelta(minutes=5), "k/old")
        update = settle(
            row, {GONE: Attempt(False, "452 4.2.2 mailbox full, try later")}, now, RetrySettings()
        )
    assert update.status == outbox.PENDING
