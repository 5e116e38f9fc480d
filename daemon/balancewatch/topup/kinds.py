"""The kinds of message automatic top-up sends, each with the samples its templates must render."""

from __future__ import annotations

from collections.abc import Mapping

from balancewatch.liveset import Sample, SampleMaker
from balancewatch.topup.notify import sample_contexts

# The name and title of each context ``sample_contexts`` makes, in its order; data only.
NAMES = (
    ("declined", "the card was declined; usage known"),
    ("gave-up", "the platform never answered; too short a history"),
    ("reported", "the operator reported a failure; balance used up, no usage"),
    ("no-credit", "accepted, but no top-up arrived"),
    ("in-inr-en-in", "declined, in INR and en_IN"),
)


def topup_failed_samples() -> list[Sample]:
    """Every shape of the top-up failure notice."""
    contexts = sample_contexts()
    names = [*NAMES, *((f"sample-{n + 1}", f"sample {n + 1}") for n in range(len(NAMES), len(contexts)))]
    return [Sample(name, title, context) for (name, title), context in zip(names, contexts, strict=False)]


SAMPLES: Mapping[str, SampleMaker] = {"topup-failed": topup_failed_samples}
