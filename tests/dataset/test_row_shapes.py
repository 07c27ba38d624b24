"""Rows look as the services write them, attack and background alike (both splits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctirealm.engine import LocalEngine
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

# Slow: the default store (a million rows a split).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATASET = Dataset.load(ROOT / "telemetry")


@pytest.fixture(scope="module", params=list(DATASET.splits))
def store(request: pytest.FixtureRequest) -> Store:
    return build_store(DATASET, split=request.param)


def _one(store: Store, kql: str) -> dict:
    with LocalEngine.of_store(store, timeout=120) as engine:
        return engine.query(kql).to_dicts()[0]


def test_audit_log_ids_carry_their_correlation_id(store: Store) -> None:
    """Entra's AuditLogs Id: ``Directory_<CorrelationId>_<5 characters>_<8 digits>``, and an
    empty (not null) ResultType."""
    found = _one(
        store,
        r"""AuditLogs | summarize n = count(),
        shaped = countif(Id matches regex @"^Directory_[0-9a-f-]{36}_[A-Z0-9]{5}_\d{8}$"
                         and Id startswith strcat("Directory_", CorrelationId, "_")),
        empty = countif(ResultType == "")""",
    )
    assert found["n"] > 0 and found["shaped"] == found["n"] == found["empty"]


def test_the_browser_agrees_with_the_user_agent(store: Store) -> None:
    """A sign-in's DeviceDetail.browser names the family its UserAgent is of."""
    found = _one(
        store,
        r"""SigninLogs
        | extend browser = tostring(DeviceDetail.browser)
        | extend family = case(UserAgent has "Edg/", "Edge", UserAgent has "Firefox/", "Firefox",
              UserAgent has "Chrome/" and UserAgent has "Mobile", "Chrome Mobile",
              UserAgent has "Chrome/", "Chrome", UserAgent has "Safari/", "Safari", "")
        | where isnotempty(family) and isnotempty(browser)
        | summarize n = count(), agree = countif(browser startswith family),
                    examples = make_set_if(strcat(browser, " / ", UserAgent),
                                           not(browser startswith family), 3)""",
    )
    assert found["n"] > 0 and found["agree"] == found["n"], found["examples"]


def test_a_clients_source_port_changes_between_requests(store: Store) -> None:
    found = _one(
        store,
        r"""StorageBlobLogs
        | where CallerIpAddress has ":"
        | extend ip = tostring(split(CallerIpAddress, ":")[0])
        | summarize requests = count(), ports = dcount(CallerIpAddress) by ip
        | summarize busy = countif(requests >= 20), varied = countif(requests >= 20
                                                                     and ports * 2 >= requests)""",
    )
    assert found["busy"] > 0 and found["varied"] == found["busy"]
