"""The kinds of message automatic top-up sends, each with the sample contexts its templates
must render."""

from __future__ import annotations

from collections.abc import Mapping

from balancewatch.liveset import SampleMaker
from balancewatch.topup.notify import sample_contexts

SAMPLES: Mapping[str, SampleMaker] = {"topup-failed": sample_contexts}
