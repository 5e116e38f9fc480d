"""Prometheus metrics: what the pipeline did, recorded as it does it; one registry per daemon.

A leaf module: every stage may import it, it imports no stage. The stages take a
``Recorder`` (an optional ``metrics=`` parameter, default ``NOOP``, which records
nothing), so the CLI and tests call them as before; the daemon passes its one
``Metrics``, which owns a ``CollectorRegistry`` of its own (never the global one:
tests start several daemons in one process).

Wiring in the daemon (``service.py``)::

    metrics = Metrics()                                   # build info, process metrics
    outboxgauges.register(metrics, engine, transport.name)  # outbox gauges, read at scrape time
    server = httpserve.serve(settings.metrics.listen, metrics, ready)  # when listen != ""
    ...
    server.close()                                        # at shutdown

and ``metrics=metrics`` to ``cycle.poll``, ``Courier(...)``, ``reports.runner.run_due``,
``topup.worker.run_topups`` and ``reload.Reloader(...)``. Each records its own
metrics; ``poll`` also times itself (``poll_finished``) and ``Reloader`` reports
each reload attempt (``reload_attempted``) and the set it started with.

``ready`` is a callable returning ``Readiness(ok, reason)``: ``/-/ready`` answers
200 while it is ok, else 503 with the reason.

Every method is cheap (a lock and an addition) and never raises for a valid
label value; label values are rule and report ids, transport names and the fixed
words listed in ``docs/monitoring.md``, so the number of series stays bounded.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from balancewatch import __version__

PollKind = Literal["poll", "sweep"]
FailureClass = Literal["temporary", "permanent", "connection"]

# Polls take milliseconds on a quiet database and minutes for a sweep over millions of balances.
POLL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the daemon can do its work now; ``reason`` says why not (shown in /-/ready's body)."""

    ok: bool
    reason: str = ""


class Recorder:
    """Where the stages report what they did. This base records nothing (``NOOP``);
    ``Metrics`` records into its registry. Every ``count`` is >= 0."""

    def balances_evaluated(self, count: int) -> None:
        """``count`` balances were looked at by one rule's step set in a poll or sweep."""

    def notification_decided(self, rule: str, kind: str, count: int = 1) -> None:
        """``count`` notifications of ``kind`` (alert | reminder | restored) were committed for ``rule``."""

    def delivery_attempted(self, transport: str) -> None:
        """One outbox message was handed to ``transport`` (or failed to be, its connection down)."""

    def delivery_failed(self, transport: str, failure: FailureClass) -> None:
        """A message attempt did not reach every due recipient: ``permanent`` when one refused
        for good (parked), else ``temporary`` (retried), or ``connection`` (transport unusable)."""

    def report_claimed(self, report: str, count: int) -> None:
        """This instance won ``count`` claims of ``report`` (each: one account, one period)."""

    def report_sent(self, report: str, count: int = 1) -> None:
        """``count`` messages of ``report`` were written to the outbox."""

    def topup_request(self, outcome: str, count: int = 1) -> None:
        """``count`` top-up requests reached ``outcome``: created | arrived | requested |
        succeeded | retry | failed | lost."""

    def poll_finished(self, kind: PollKind, seconds: float, ok: bool, *, at: float | None = None) -> None:
        """A poll or sweep ended after ``seconds``; ``ok`` False when it raised or was interrupted.
        ``at`` is the Unix time it ended (default: now)."""

    def rule_set_loaded(self, digest: str, rules: int, *, at: float | None = None) -> None:
        """The set ``digest`` with ``rules`` rules is live (at start, or swapped in by a reload)."""

    def reload_attempted(self, ok: bool, digest: str, rules: int, *, at: float | None = None) -> None:
        """A reload was attempted; ``digest`` and ``rules`` describe the set live after it."""


NOOP = Recorder()


class Metrics(Recorder):
    """The daemon's metrics, in ``registry`` (a fresh CollectorRegistry unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        # Data-only: one declaration per metric (docs/monitoring.md lists them), long by nature.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        Info("balancewatch_build", "The running balancewatch version and Python.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        if process:
            ProcessCollector(registry=r)  # process_start_time_seconds, memory, CPU, open fds
        self._balances = Counter(
            "balancewatch_balances_evaluated", "Balances looked at by a rule in polls and sweeps.", registry=r
        )
        self._decided = Counter(
            "balancewatch_notifications_decided",
            "Notifications decided and committed to the outbox, by rule and kind.",
            ["rule", "kind"],
            registry=r,
        )
        self._attempts = Counter(
            "balancewatch_delivery_attempts",
            "Outbox messages handed to a transport (each try of each message).",
            ["transport"],
            registry=r,
        )
        self._failures = Counter(
            "balancewatch_delivery_failures",
            "Message attempts that did not reach every due recipient, by failure class.",
            ["transport", "class"],
            registry=r,
        )
        self._claims = Counter(
            "balancewatch_report_claims",
            "Report claims won (one account, one period).",
            ["report"],
            registry=r,
        )
        self._reports = Counter(
            "balancewatch_reports_sent", "Report messages written to the outbox.", ["report"], registry=r
        )
        self._topups = Counter(
            "balancewatch_topup_requests", "Top-up requests by what became of them.", ["outcome"], registry=r
        )
        self._poll_seconds = Histogram(
            "balancewatch_poll_duration_seconds",
            "How long polls and full sweeps took.",
            ["kind"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self._poll_failures = Counter(
            "balancewatch_poll_failures",
            "Polls and sweeps that raised or were interrupted.",
            ["kind"],
            registry=r,
        )
        self._poll_success = Gauge(
            "balancewatch_last_poll_success_timestamp_seconds",
            "Unix time the last poll or sweep that finished without error ended.",
            ["kind"],
            registry=r,
        )
        self._reload_attempts = Counter(
            "balancewatch_reload_attempts", "Reloads of rules and templates attempted.", registry=r
        )
        self._reload_failures = Counter(
            "balancewatch_reload_failures", "Reloads refused (the previous set kept running).", registry=r
        )
        self._reload_ok = Gauge(
            "balancewatch_last_reload_successful",
            "1 when the last reload attempt (or the load at start) succeeded, else 0.",
            registry=r,
        )
        self._reload_success = Gauge(
            "balancewatch_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of the rules and templates (at start or a reload).",
            registry=r,
        )
        self._rule_set = Info(
            "balancewatch_rule_set", "The live rule set: digest and number of rules.", registry=r
        )

    def register(self, collector: Collector) -> None:
        """Add a collector (e.g. the outbox gauges) to this daemon's registry."""
        self.registry.register(collector)

    def balances_evaluated(self, count: int) -> None:
        self._balances.inc(count)

    def notification_decided(self, rule: str, kind: str, count: int = 1) -> None:
        self._decided.labels(rule, kind).inc(count)

    def delivery_attempted(self, transport: str) -> None:
        self._attempts.labels(transport).inc()

    def delivery_failed(self, transport: str, failure: FailureClass) -> None:
        self._failures.labels(transport, failure).inc()

    def report_claimed(self, report: str, count: int) -> None:
        self._claims.labels(report).inc(count)

    def report_sent(self, report: str, count: int = 1) -> None:
        self._reports.labels(report).inc(count)

    def topup_request(self, outcome: str, count: int = 1) -> None:
        self._topups.labels(outcome).inc(count)

    def poll_finished(self, kind: PollKind, seconds: float, ok: bool, *, at: float | None = None) -> None:
        self._poll_seconds.labels(kind).observe(seconds)
        if ok:
            self._poll_success.labels(kind).set(time.time() if at is None else at)
        else:
            self._poll_failures.labels(kind).inc()

    def rule_set_loaded(self, digest: str, rules: int, *, at: float | None = None) -> None:
        self._rule_set.info({"digest": digest, "rules": str(rules)})
        self._reload_ok.set(1)
        self._reload_success.set(time.time() if at is None else at)

    def reload_attempted(self, ok: bool, digest: str, rules: int, *, at: float | None = None) -> None:
        self._reload_attempts.inc()
        if ok:
            self.rule_set_loaded(digest, rules, at=at)
        else:
            self._reload_failures.inc()
            self._reload_ok.set(0)
