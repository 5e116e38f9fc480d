"""The top level of a rule file: alerts and reports."""

from __future__ import annotations

from pydantic import Field

from balancewatch.rules.editor_schema import may_be_empty
from balancewatch.rules.models import AlertRule, _Strict
from balancewatch.rules.reports import ReportRule


class RuleFile(_Strict):
    """A balancewatch rule file: alerts and reports lists. Check it with `balancewatch check`."""

    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="The alert rules of this file, each starting with '- id: ...'; "
        "ids are unique across all rule files.",
        json_schema_extra=may_be_empty,
    )
    reports: list[ReportRule] = Field(
        default_factory=list,
        description="Scheduled reports, each starting with '- id: ...'; ids are unique across rule files.",
        json_schema_extra=may_be_empty,
    )
