"""The kinds of message reports send (one per contents), each with the sample contexts its
templates must render."""

from __future__ import annotations

from collections.abc import Mapping

from balancewatch.liveset import SampleMaker
from balancewatch.reports.samples import MAKERS

SAMPLES: Mapping[str, SampleMaker] = {f"report-{contents}": make for contents, make in MAKERS.items()}
