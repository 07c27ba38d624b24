"""Sentinel scheduling, simulated: durations, schedules, which queries can be binned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctirealm.plugin.content_schedule import Schedule, binned, parse_duration, unbinnable
from ctirealm.telemetry.schema import load_schemas

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "minutes"), [
    ("5m", 5), ("1h", 60), ("14d", 20160), ("PT5M", 5), ("PT1H", 60), ("P1D", 1440),
    ("P1DT12H", 2160), ("pt30m", 30), ("1w", None), ("P", None), ("PT", None), ("", None),
    (None, None), ("60", None),
])
def test_durations(text: object, minutes: int | None) -> None:
    found = parse_duration(text)
    assert (found.total_seconds() / 60 if found else None) == minutes


def test_schedule_runs_cover_the_window_and_end_at_the_clock() -> None:
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC)
    schedule = Schedule.of({"queryFrequency": "1d", "queryPeriod": "P2D", "triggerOperator": "lt",
                            "triggerThreshold": 3})
    ends = schedule.ends(start, end)
    assert len(ends) == 14 and ends[-1] == end and ends[0] == start + timedelta(days=1)
    assert schedule.fires(2) and not schedule.fires(3)
    assert schedule.describe() == "every 1d over the last 2d, alerting when results < 3"
    stalled = Schedule.of({"queryFrequency": "0m", "queryPeriod": "PT0M"})
    assert len(stalled.ends(start, end)) == 336
    nrt = Schedule.of({"kind": "NRT", "eventGroupingSettings": {"aggregationKind": "AlertPerResult"}})
    assert nrt.describe() == "every minute (NRT), alerting when results > 0, an alert per result row"


def test_binned_runs_overlap_when_the_period_is_longer() -> None:
    end = datetime(2026, 3, 16, tzinfo=UTC)
    schedule = Schedule.of({"queryFrequency": "1h", "queryPeriod": "2h", "triggerOperator": "gt",
                            "triggerThreshold": 1})
    times = [end - timedelta(minutes=90), end - timedelta(minutes=30)]
    sim = binned(schedule, schedule.ends(end - timedelta(hours=3), end), [{"a": 1}, {"a": 2}],
                 ["a"], times)
    assert [hi - lo for lo, hi in sim.spans] == [0, 1, 2]
    assert sim.firing() == [2] and sim.alerts(2) == [[{"a": 1}, {"a": 2}]]


@pytest.mark.parametrize(("query", "reason"), [
    ('DeviceProcessEvents | where ProcessCommandLine has "x" | project Timestamp, ReportId', None),
    ("union SigninLogs, AuditLogs | where OperationName == 'x' | extend y = 1", None),
    ('DeviceProcessEvents | where ProcessCommandLine has "ago(1h) | summarize" // now()', None),
    ("DeviceProcessEvents | where Timestamp > ago(1h)", "it calls ago()"),
    ("let t = now(); SigninLogs", "it calls now()"),
    ("SigninLogs | summarize count() by UserPrincipalName",
     "it aggregates across the lookback (summarize)"),
    ("SigninLogs | join (AuditLogs) on CorrelationId", "its rows may combine events (join)"),
    ("let bad = SigninLogs | where ResultType != '0' | project IPAddress;\n"
     "SigninLogs | where IPAddress in (bad)", "it compares with a sub-query over bad"),
    ("SigninLogs | where IPAddress in (AuditLogs | project x)",
     "it compares with a sub-query over AuditLogs"),
])
def test_which_queries_can_be_binned(query: str, reason: str | None) -> None:
    assert unbinnable(query, load_schemas(ROOT / "telemetry" / "schemas")) == reason
