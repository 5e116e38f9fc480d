"""Hot reload: real files in tmp_path, real watchdog events, a Pipeline over a real database.

Every wait is on a condition with a deadline. "Exactly one reload" is proved
rather than hoped for: after the save, a hidden sentinel file is written; once
the reloader has seen the sentinel's event, every event of the save has
arrived before it (inotify keeps their order), and once the reloader is idle
they have all been dealt with. A backstop of an hour keeps it out of the way
except in the test about lost events.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from balancewatch.alerts.context import sample_alert_context
from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.reload import Reloader, ReloadStatus
from balancewatch.runtime.service import Pipeline, build_pipeline, changed_settings
from balancewatch.store import status as instance_status
from tests.conftest import Clock
from tests.helpers import OUTBOX, account, post, states
from tests.test_daemon import Cli, cli, wait_until  # noqa: F401  (cli is a fixture)

DEBOUNCE = 0.2
NEVER = 3600.0  # a backstop that does not fire during a test
WITHIN = 2.0  # seconds from the save to the new set live (the bound)
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

RULE = """\
alerts:
  - id: {id}
    description: "{description}"
    accounts: {{currency: USD}}
    below: [{step}]
    template: low-balance
"""


def rule(id: str = "ladder", description: str = "v1", step: int = 100) -> str:
    return RULE.format(id=id, description=description, step=step)


# --- how files get saved ----------------------------------------------------------------------------


def write_plain(directory: Path, name: str, body: str) -> None:
    (directory / name).write_text(body)


STEP = DEBOUNCE / 4


def between_steps() -> None:
    """A save takes time: its steps are spread out (well inside the debounce), as a slow
    editor or a loaded disk spreads them, so a reloader that did not wait for quiet
    would load a half-done save. Not a wait for anything."""
    time.sleep(STEP)


def write_slowly(path: Path, body: str) -> None:
    """Write ``body`` in two halves with a pause between: a truncated file is visible for a while."""
    with path.open("w") as f:
        f.write(body[: len(body) // 2])
        f.flush()
        between_steps()
        f.write(body[len(body) // 2 :])


def write_configmap(directory: Path, files: dict[str, str], pause: Callable[[], None] = lambda: None) -> None:
    """Publish ``files`` as the kubelet updates a ConfigMap volume: a new hidden
    timestamped directory, a ``..data_tmp`` symlink to it renamed over ``..data``
    in one step, visible names linking through ``..data``, the old directory removed."""
    old = (directory / "..data").readlink() if (directory / "..data").is_symlink() else None
    fresh = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
    (directory / fresh).mkdir()
    for name, body in files.items():
        (directory / fresh / name).write_text(body)
    pause()
    (directory / "..data_tmp").symlink_to(fresh)
    (directory / "..data_tmp").replace(directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    pause()
    if old is not None:
        shutil.rmtree(directory / old)


def save_in_place(directory: Path) -> None:
    write_slowly(directory / "rules.yaml", rule(description="v2"))


def save_by_rename(directory: Path) -> None:
    # sed -i: a temporary file beside the original, renamed over it.
    tmp = directory / f"sed{uuid.uuid4().hex[:6]}"
    write_slowly(tmp, rule(description="v2"))
    between_steps()
    tmp.replace(directory / "rules.yaml")


def save_like_vim(directory: Path) -> None:
    # vim (backupcopy=no): probe file 4913, original renamed to a backup, new file written, backup removed.
    (directory / "4913").touch()
    (directory / "4913").unlink()
    (directory / "rules.yaml").rename(directory / "rules.yaml~")
    between_steps()
    write_slowly(directory / "rules.yaml", rule(description="v2"))
    (directory / "rules.yaml").chmod(0o644)
    between_steps()
    (directory / "rules.yaml~").unlink()


def delete_then_create(directory: Path) -> None:
    (directory / "rules.yaml").unlink()
    between_steps()
    write_slowly(directory / "rules.yaml", rule(description="v2"))


def swap_configmap(directory: Path) -> None:
    write_configmap(directory, {"rules.yaml": rule(description="v2")}, between_steps)


def add_a_file(directory: Path) -> None:
    write_slowly(directory / "extra.yaml", rule(id="extra", step=500))


def remove_a_file(directory: Path) -> None:
    (directory / "extra.yaml").unlink()


def one_file(directory: Path) -> None:
    write_plain(directory, "rules.yaml", rule())


def two_files(directory: Path) -> None:
    write_plain(directory, "rules.yaml", rule())
    write_plain(directory, "extra.yaml", rule(id="extra", step=500))


def as_configmap(directory: Path) -> None:
    write_configmap(directory, {"rules.yaml": rule()})


@dataclass(frozen=True)
class SavePattern:
    name: str
    setup: Callable[[Path], None]
    save: Callable[[Path], None]
    expected: frozenset[tuple[str, str]]  # (rule id, description) live afterwards


V2 = frozenset({("ladder", "v2")})
PATTERNS = [
    SavePattern("write-in-place", one_file, save_in_place, V2),
    SavePattern("temp-file-renamed-over", one_file, save_by_rename, V2),
    SavePattern("vim-backup-and-rename", one_file, save_like_vim, V2),
    SavePattern("delete-then-create", one_file, delete_then_create, V2),
    SavePattern("configmap-data-swap", as_configmap, swap_configmap, V2),
    SavePattern("new-file", one_file, add_a_file, frozenset({("ladder", "v1"), ("extra", "v1")})),
    SavePattern("removed-file", two_files, remove_a_file, frozenset({("ladder", "v1")})),
]


# --- the reloader under test --------------------------------------------------------------------------


@dataclass
class Watched:
    """A Reloader feeding a Pipeline, recording every status it published and when each set went live."""

    rules_dir: Path
    templates_dir: Path
    pipeline: Pipeline
    reloader: Reloader
    statuses: list[ReloadStatus] = field(default_factory=list)
    swapped_at: list[float] = field(default_factory=list)

    def live_rules(self) -> frozenset[tuple[str, str]]:
        return frozenset((r.id, r.description) for r in self.pipeline.live.rules)

    def wait_reloads(self, n: int) -> None:
        wait_until(lambda: self.reloader.status.reloads >= n, f"{n} reloads")

    def wait_attempts(self, n: int) -> None:
        wait_until(lambda: self.reloader.status.attempts >= n, f"{n} reload attempts")

    def settle(self) -> None:
        """Return once every file event so far has arrived and been dealt with."""
        sentinel = self.rules_dir.resolve() / f".settled-{uuid.uuid4().hex}"
        sentinel.touch()
        wait_until(lambda: self.reloader.has_seen(sentinel), "the sentinel's file event")
        wait_until(self.reloader.idle, "the reloader to go idle")


MakeWatched = Callable[..., Watched]


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped templates, so nothing outside the test touches what is watched."""
    return Path(shutil.copytree(shipped.templates_dir(), tmp_path / "templates"))


@pytest.fixture
def make_watched(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    rules_dir: Path,
    templates_dir: Path,
) -> Iterator[MakeWatched]:
    started: list[Reloader] = []

    def make(
        setup: Callable[[Path], None] = one_file,
        *,
        watch: bool = True,
        backstop: float = NEVER,
        templates: Path = templates_dir,
    ) -> Watched:
        setup(rules_dir)
        live = load_set(rules_dir, templates)
        pipeline = build_pipeline(engine, make_settings(db_url), live)
        watched = Watched(rules_dir, templates, pipeline, None)  # type: ignore[arg-type]

        def swap(new: LiveSet) -> None:
            pipeline.swap(new)
            watched.swapped_at.append(time.monotonic())

        watched.reloader = Reloader(
            rules_dir,
            templates,
            live,
            swap,
            debounce=DEBOUNCE,
            backstop=backstop,
            on_status=lambda status, _live: watched.statuses.append(status),
        )
        watched.reloader.start(watch=watch)
        started.append(watched.reloader)
        return watched

    yield make
    for reloader in started:
        reloader.stop()


# --- save patterns ------------------------------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.name for p in PATTERNS])
def test_each_save_pattern_reloads_exactly_once_with_the_new_content_live_within_2s(
    pattern: SavePattern, make_watched: MakeWatched
) -> None:
    w = make_watched(pattern.setup)
    saved = time.monotonic()
    pattern.save(w.rules_dir)

    w.wait_reloads(1)
    assert w.swapped_at[0] - saved < WITHIN
    assert w.live_rules() == pattern.expected
    w.settle()
    assert w.reloader.status.reloads == 1
    assert [(s.ok, s.reloads) for s in w.statuses] == [(True, 1)]
    assert w.statuses[0].reason.startswith("file ")


@SQLITE
def test_a_template_edit_reloads_the_set_and_the_new_template_renders(make_watched: MakeWatched) -> None:
    w = make_watched()
    subject = w.templates_dir / "low-balance" / "subject.txt"
    subject.write_text("Heads up: {{ account.name }} is low on {{ currency }}")

    w.wait_reloads(1)
    rendered = w.pipeline.live.templates.render("low-balance", sample_alert_context("crossed"))
    assert rendered.subject.startswith("Heads up: ")


@SQLITE
def test_a_broken_template_is_refused_naming_its_file_and_line_and_the_old_templates_stay(
    make_watched: MakeWatched,
) -> None:
    w = make_watched()
    before = w.pipeline.live.templates
    subject = w.templates_dir / "low-balance" / "subject.txt"
    subject.write_text("{{ account.name }}\n{% if %}")

    w.wait_attempts(1)
    assert f"{subject}:2: " in w.reloader.status.error
    assert w.pipeline.live.templates is before


@SQLITE
def test_touching_a_file_without_changing_it_does_not_reload(make_watched: MakeWatched) -> None:
    w = make_watched()
    (w.rules_dir / "rules.yaml").write_text(rule())  # the same bytes again
    os.utime(w.rules_dir / "rules.yaml")

    w.settle()
    assert w.reloader.status.reloads == 0
    assert w.statuses == []  # an unchanged set is not even an attempt


# --- bad edits ----------------------------------------------------------------------------------------


@SQLITE
def test_a_bad_edit_keeps_the_old_rules_firing_and_reports_file_line_and_field_then_the_fix_is_picked_up(
    make_watched: MakeWatched, engine: Engine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="balancewatch.runtime.reload")
    w = make_watched()
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 300_00, clock())
    assert w.pipeline.evaluate(clock()).notifications == 0
    old_digest = w.pipeline.live.digest

    path = w.rules_dir / "rules.yaml"
    path.write_text(rule(description="v2").replace("below: [100]", "below: [100, abc]"))
    w.wait_attempts(1)

    where = f"{path}:5: alerts[0].below[1]: 'abc' is not an amount"
    assert w.reloader.status.ok is False
    assert where in w.reloader.status.error
    assert any(where in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert w.pipeline.live.digest == old_digest

    post(engine, "acme", "USD", -210_00, clock.advance(minutes=1))
    stats = w.pipeline.evaluate(clock.advance(minutes=1))
    assert dict(stats.decided) == {"ladder": 1}  # the old rule still fires
    with engine.connect() as conn:
        [subject] = conn.execute(select(OUTBOX.c.subject)).scalars()
    assert subject == "Acme Ltd: USD balance $90.00 is below $100.00"

    path.write_text(rule(description="fixed"))
    w.wait_reloads(1)
    assert w.live_rules() == {("ladder", "fixed")}
    assert (w.reloader.status.ok, w.reloader.status.error) == (True, "")
    w.settle()
    assert [(s.ok, s.reloads) for s in w.statuses] == [(False, 0), (True, 1)]


@SQLITE
def test_a_refused_edit_is_reported_once_not_at_every_backstop(
    make_watched: MakeWatched, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_watched(backstop=0.1)
    (w.rules_dir / "rules.yaml").write_text(rule(id="Not Valid"))
    w.settle()
    assert w.reloader.status.ok is False
    reported, logged, checks = len(w.statuses), len(caplog.records), w.reloader.checks

    # Several backstops pass: each finds the same refused set and says nothing new.
    wait_until(lambda: w.reloader.checks >= checks + 5, "five more backstop checks")
    assert len(w.statuses) == reported
    assert len(caplog.records) == logged


@SQLITE
def test_undoing_a_refused_edit_reports_the_running_set_as_ok_again(make_watched: MakeWatched) -> None:
    w = make_watched()
    path = w.rules_dir / "rules.yaml"
    good = path.read_text()
    path.write_text("alerts: [")
    w.wait_attempts(1)
    assert w.reloader.status.ok is False

    path.write_text(good)
    w.wait_attempts(2)
    assert (w.reloader.status.ok, w.reloader.status.reloads) == (True, 0)


@SQLITE
def test_a_rule_naming_a_missing_template_is_refused_with_its_file_and_line(
    make_watched: MakeWatched,
) -> None:
    w = make_watched()
    path = w.rules_dir / "rules.yaml"
    path.write_text(rule().replace("template: low-balance", "template: nowhere"))
    w.wait_attempts(1)
    assert f"{path}:2: template: template 'nowhere' not found" in w.reloader.status.error
    assert w.live_rules() == {("ladder", "v1")}


# --- lost events and SIGHUP ---------------------------------------------------------------------------


@SQLITE
def test_the_backstop_picks_up_a_change_made_while_no_file_events_arrive(make_watched: MakeWatched) -> None:
    w = make_watched(watch=False, backstop=0.2)
    (w.rules_dir / "rules.yaml").write_text(rule(description="v2"))

    w.wait_reloads(1)
    assert w.live_rules() == {("ladder", "v2")}
    assert w.statuses[-1].reason == "backstop"


@SQLITE
def test_reload_now_loads_at_once_and_records_an_attempt_even_when_nothing_changed(
    make_watched: MakeWatched,
) -> None:
    w = make_watched(watch=False)
    unchanged = w.reloader.reload_now("SIGHUP")
    assert (unchanged.ok, unchanged.reloads, unchanged.attempts, unchanged.reason) == (True, 0, 1, "SIGHUP")

    (w.rules_dir / "rules.yaml").write_text(rule(description="v2"))
    changed = w.reloader.reload_now("SIGHUP")  # no debounce, no watcher: done when it returns
    assert (changed.ok, changed.reloads) == (True, 1)
    assert w.live_rules() == {("ladder", "v2")}


@SQLITE
def test_a_rules_directory_replaced_by_a_rename_is_reloaded_and_watched_again(
    make_watched: MakeWatched, tmp_path: Path
) -> None:
    w = make_watched()
    staged = tmp_path / "rules.new"
    staged.mkdir()
    write_plain(staged, "rules.yaml", rule(description="v2"))
    w.rules_dir.rename(tmp_path / "rules.old")  # a deployment swapping the whole directory
    staged.rename(w.rules_dir)

    assert w.reloader.reload_now("SIGHUP").reloads == 1  # (the backstop would do the same, later)
    assert w.live_rules() == {("ladder", "v2")}
    (w.rules_dir / "rules.yaml").write_text(rule(description="v3"))
    w.wait_reloads(2)
    assert w.live_rules() == {("ladder", "v3")}
    assert w.statuses[-1].reason.startswith("file ")  # seen by the watcher, not found by a backstop


# --- removed files keep their state -------------------------------------------------------------------


@SQLITE
def test_a_removed_rule_file_stops_its_rules_and_putting_it_back_resumes_them_with_their_state(
    make_watched: MakeWatched, engine: Engine, clock: Clock
) -> None:
    w = make_watched(two_files)
    extra = (w.rules_dir / "extra.yaml").read_text()
    account(engine, "acme")
    post(engine, "acme", "USD", 400_00, clock())
    assert dict(w.pipeline.evaluate(clock()).decided) == {"extra": 1}
    fired = states(engine, "extra", "acme")

    (w.rules_dir / "extra.yaml").unlink()
    w.wait_reloads(1)
    post(engine, "acme", "USD", -50_00, clock.advance(hours=1))
    assert dict(w.pipeline.evaluate(clock.advance(minutes=1)).decided) == {}
    assert states(engine, "extra", "acme") == fired  # kept while the rule is away

    (w.rules_dir / "extra.yaml").write_text(extra)
    w.wait_reloads(2)
    resumed = w.pipeline.evaluate(clock.advance(minutes=1))
    assert resumed.full  # a new set is swept whole
    assert dict(resumed.decided) == {}  # the step already fired: no second alert
    assert states(engine, "extra", "acme") == fired

    post(engine, "acme", "USD", 300_00, clock.advance(hours=1))  # 650: re-armed above 500 + 10 %
    w.pipeline.evaluate(clock.advance(minutes=1))
    post(engine, "acme", "USD", -200_00, clock.advance(hours=1))  # 450: below 500 again
    assert dict(w.pipeline.evaluate(clock.advance(minutes=1)).decided) == {"extra": 1}
    assert states(engine, "extra", "acme")[500_00].episode == fired[500_00].episode + 1


# --- no evaluation sees a mixed set -------------------------------------------------------------------

MINI_TEMPLATE = {"subject.txt": "{{ rule.id }} {{ rule.description }}", "body.txt": "{{ account.name }}\n"}


def marked_set(marker: str) -> str:
    """Three rules whose ids and descriptions all carry ``marker``; each reminds at every evaluation."""
    return "alerts:\n" + "".join(
        f"  - id: {marker}{n}\n"
        f'    description: "{marker}"\n'
        "    accounts: {currency: USD}\n"
        "    below: [1000]\n"
        "    remind: 1m\n"
        "    template: mini\n"
        for n in (1, 2, 3)
    )


@SQLITE
def test_200_reloads_while_evaluations_run_never_show_an_evaluation_a_mixed_set(
    make_watched: MakeWatched, engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    mini = tmp_path / "mini-templates"
    (mini / "mini").mkdir(parents=True)
    for name, body in MINI_TEMPLATE.items():
        (mini / "mini" / name).write_text(body)
    sets = {"a": marked_set("a"), "b": marked_set("b")}

    def publish(marker: str) -> None:
        # One file renamed over the other: the files on disk are never a mix.
        tmp = w.rules_dir / ".next"
        tmp.write_text(sets[marker])
        tmp.replace(w.rules_dir / "rules.yaml")

    w = make_watched(lambda d: write_plain(d, "rules.yaml", sets["a"]), watch=False, templates=mini)
    account(engine, "acme")
    post(engine, "acme", "USD", 500_00, clock())
    done = threading.Event()
    evaluations: list[int] = []
    failures: list[BaseException] = []

    def evaluate_until_done() -> None:
        # Every evaluation is a day later: each rule of the set it runs sends one alert or reminder.
        try:
            while not done.is_set():
                w.pipeline.evaluate(clock.advance(days=1))
                evaluations.append(1)
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    evaluator = threading.Thread(target=evaluate_until_done)
    evaluator.start()
    try:
        for n in range(200):
            publish("b" if n % 2 == 0 else "a")
            status = w.reloader.reload_now("test")
            assert (status.ok, status.reloads) == (True, n + 1), status.error
    finally:
        done.set()
        evaluator.join(timeout=60)
    assert not failures, failures

    seen: dict[object, set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for created_at, rule_id, subject in conn.execute(
            select(OUTBOX.c.created_at, OUTBOX.c.rule_id, OUTBOX.c.subject)
        ):
            assert subject.split()[1] == rule_id[0]  # the rule and its description came from one set
            seen[created_at].add(rule_id)
    assert len(seen) == len(evaluations) >= 10
    assert set(map(frozenset, seen.values())) == {
        frozenset({"a1", "a2", "a3"}),
        frozenset({"b1", "b2", "b3"}),
    }


# --- a swap during a sweep ----------------------------------------------------------------------------


@POSTGRES
def test_a_set_swapped_in_while_a_sweep_runs_is_swept_by_the_next_evaluation(
    engine: Engine, make_watched: MakeWatched, clock: Clock
) -> None:
    w = make_watched()
    account(engine, "acme")
    post(engine, "acme", "USD", 90_00, clock())
    stats: list[object] = []
    with engine.connect() as blocker:
        # Hold the balance's row lock so the sweep waits in the middle, on the old set.
        blocker.execute(text("SELECT 1 FROM balance WHERE account_id = 'acme' FOR UPDATE"))
        sweep = threading.Thread(target=lambda: stats.append(w.pipeline.evaluate(clock())))
        sweep.start()
        wait_until(lambda: _waiting_on_a_lock(engine), "the sweep to wait for the row lock")
        (w.rules_dir / "rules.yaml").write_text(rule(description="v2"))
        w.wait_reloads(1)
        blocker.rollback()
    sweep.join(timeout=20)
    assert stats and w.pipeline.last_sweep is None
    assert w.pipeline.evaluate(clock.advance(minutes=1)).full


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        )


# --- config changes ------------------------------------------------------------------------------


def test_changed_settings_names_each_changed_key_as_written_in_the_file_and_never_a_secret(
    make_settings: Callable[..., Settings],
) -> None:
    running = make_settings(smtp__password="old-secret", poll_interval="30s")
    edited = make_settings(
        smtp__password="new-secret", poll_interval="10s", delivery__from="Ops <ops@x.example>"
    )

    assert changed_settings(running, running) == []
    assert changed_settings(running, edited) == ["delivery.from", "poll_interval", "smtp.password"]


# --- the daemon ---------------------------------------------------------------------------------------


def _row(engine: Engine) -> object | None:
    with engine.connect() as conn:
        rows = instance_status.read_all(conn)
    return rows[0] if rows else None


def test_sighup_reloads_a_running_daemon_at_once_and_names_config_settings_that_need_a_restart(
    cli: Cli,  # noqa: F811
    engine: Engine,
    rules_dir: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "config.yaml").write_text("sweep_interval: 15m\n")  # ./config.yaml: the daemon's cwd
    daemon = cli.start(reload__watch="false")
    wait_until(lambda: _row(engine) is not None, "the instance's status row")
    started = _row(engine)
    assert (started.reloads, started.reload_ok, started.live_rules) == (0, None, 1)  # type: ignore[union-attr]

    new_rules = rule(id="ladder", description="after SIGHUP").replace("below: [100]", "below: [250, 100, 10]")
    (rules_dir / "rules.yaml").write_text(new_rules)
    (tmp_path / "config.yaml").write_text("sweep_interval: 5m\n")
    daemon.process.send_signal(signal.SIGHUP)

    wait_until(lambda: getattr(_row(engine), "reloads", 0) == 1, "the reload recorded in the status row")
    row = _row(engine)
    assert (row.reload_ok, row.reload_reason, row.reload_error) == (True, "SIGHUP", None)  # type: ignore[union-attr]
    assert row.live_digest != started.live_digest  # type: ignore[union-attr]
    assert row.rule_files == {"rules.yaml": new_rules}  # type: ignore[union-attr]
    daemon.wait_log("sweep_interval changed: needs a restart to take effect")
    assert "reloaded (SIGHUP): 1 rules" in daemon.log
    assert daemon.stop(signal.SIGTERM) == 0
    assert "file " not in row.reload_reason  # type: ignore[union-attr]  # watching was off: SIGHUP did it


def test_a_running_daemon_picks_up_an_edit_and_publishes_it_for_plan(
    cli: Cli,  # noqa: F811
    engine: Engine,
    rules_dir: Path,
) -> None:
    daemon = cli.start(reload__debounce="100ms")
    wait_until(lambda: _row(engine) is not None, "the instance's status row")
    edited = rule(description="edited live").replace("below: [100]", "below: [250, 100, 10]")
    (rules_dir / "rules.yaml").write_text(edited)

    wait_until(lambda: getattr(_row(engine), "reloads", 0) == 1, "the reload recorded in the status row")
    with engine.connect() as conn:
        in_effect = instance_status.rules_in_effect(conn, datetime.now(UTC))
    assert in_effect is not None
    assert in_effect.files == {"rules.yaml": edited}
    assert "reloaded (file " in daemon.log
    assert daemon.stop(signal.SIGTERM) == 0
