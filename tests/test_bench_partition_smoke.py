"""The ledger partitioning benchmark runs: at a tiny size, only to prove it works (its figures mean
nothing here): both ledgers are built, every measurement is printed and written, the schema is dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from balancewatch.store.db import make_engine
from tests.bench import bench_partition
from tests.conftest import PG_URL, require_postgres


def _bench_schemas() -> set[str]:
    engine = make_engine(PG_URL)
    try:
        with engine.connect() as conn:
            sql = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bw_bench_%'"
            return set(conn.execute(text(sql)).scalars())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_partition_benchmark_prints_every_measurement_on_both_ledgers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_postgres()
    before = _bench_schemas()
    result = tmp_path / "figures.json"
    argv = ["--accounts", "50", "--days", "70", "--repeat", "1", "--seeks", "20", "--pg-url", PG_URL]
    code = bench_partition.main([*argv, "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0

    # Every timed figure: its line, with units, seconds and µs per unit on both tables, and the ratio.
    number = r"\d[\d,]*(\.\d+)?"
    for _, label, _ in bench_partition.MEASURES:
        row = rf"^{re.escape(label)} +{number} +{number} +{number} +{number} +{number} +{number}x$"
        assert re.search(row, out, re.MULTILINE), (label, out)
    assert "must include all partitioning columns" in out, out
    assert re.search(r"^\(g\) sizes after loading", out, re.MULTILINE), out
    for relation in (
        "table",
        "ix_ledger_account_time",
        "ix_monthly_occurred_at",
        "uq_monthly_reference",
        "total",
    ):
        assert re.search(rf"^  .*\b{relation}\b +{number} MB", out, re.MULTILINE), (relation, out)
    assert re.search(rf"^  plain: +DELETE {number} s .* VACUUM {number} s", out, re.MULTILINE), out
    assert re.search(rf"^  monthly: DETACH PARTITION {number} s, DROP TABLE {number} s", out, re.MULTILINE), (
        out
    )

    figures = json.loads(result.read_text())
    assert figures["entries"] > 0 and figures["window_entries"] > 0 and figures["month_entries"] > 0
    assert figures["seeks"] == 20
    assert set(figures["measures"]) == {key for key, _, _ in bench_partition.MEASURES}
    for key, m in figures["measures"].items():
        assert m["units"] > 0, key
        for table in bench_partition.TABLES:
            assert len(m["seconds"][table]) == 1 and m["seconds"][table][0] > 0, (key, table)
    for table in bench_partition.TABLES:
        assert len(figures["sizes"][table]) == 6, figures["sizes"]  # the table, four indexes, the total
        assert all(size > 0 for size in figures["sizes"][table].values()), figures["sizes"]
    retention = figures["retention"]
    assert retention["rows"] > 0
    assert retention["monthly_after"] < retention["monthly_before"]
    assert _bench_schemas() <= before  # its schema dropped
