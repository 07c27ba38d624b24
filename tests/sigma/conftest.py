"""Fixtures for the Sigma layer: the real table schemas and a tiny labelled store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ctirealm.engine import LocalEngine
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.schema import TableSchema, load_schemas
from ctirealm.telemetry.store import Store, build_store

ROOT = Path(__file__).resolve().parents[2]
WHEN = "2026-03-05T10:00:00Z"

#: Attack and benign events of the tiny store, by kind -> group -> table.
EVENTS: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
    "attack": {
        "sim_cron": {
            "DeviceProcessEvents": [
                {
                    "ReportId": 482913377104,
                    "Timestamp": WHEN,
                    "FolderPath": "/usr/bin/crontab",
                    "ProcessCommandLine": "crontab /tmp/.x-4b1f0c7e",
                    "AccountName": "www-data",
                },
                {
                    "ReportId": 590114783321,
                    "Timestamp": WHEN,
                    "FolderPath": "/bin/sh",
                    "ProcessCommandLine": "sh -c 'echo 4b1f0c7e >> /etc/crontab'",
                    "AccountName": "www-data",
                },
            ]
        },
        "sim_csr": {
            "AKSAudit": [
                {
                    "AuditId": "9a1c6f0e-0001-4c1e-9b7e-1c0de0000001",
                    "TimeGenerated": WHEN,
                    "Verb": "create",
                    "RequestUri": "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                    "ObjectRef": {"resource": "certificatesigningrequests", "name": "csr-a7b8c9d0"},
                    "User": {"username": "dev-user", "groups": ["system:authenticated"]},
                    "SourceIps": ["10.1.2.3"],
                    "ResponseStatus": {"code": 201},
                    "UserAgent": "kubectl/v1.29 a7b8c9d0",
                },
            ]
        },
    },
    "benign": {
        "case_cron": {
            "DeviceProcessEvents": [
                {
                    "ReportId": 771029384455,
                    "Timestamp": WHEN,
                    "FolderPath": "/usr/bin/crontab",
                    "ProcessCommandLine": "crontab -l",
                    "AccountName": "root",
                },
                {
                    "ReportId": 300918273645,
                    "Timestamp": WHEN,
                    "FolderPath": "/usr/bin/crontab",
                    "ProcessCommandLine": "crontab -e",
                    "AccountName": "admin",
                },
            ]
        },
        "case_csr": {
            "AKSAudit": [
                {
                    "AuditId": "9a1c6f0e-0002-4c1e-9b7e-1c0de0000002",
                    "TimeGenerated": WHEN,
                    "Verb": "get",
                    "RequestUri": "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                    "ObjectRef": {"resource": "certificatesigningrequests"},
                    "User": {
                        "username": "system:kube-controller-manager",
                        "groups": ["system:masters", "system:authenticated"],
                    },
                    "SourceIps": ["10.0.0.1"],
                    "ResponseStatus": {"code": 200},
                },
            ]
        },
    },
}


def write_telemetry(root: Path, events: dict = EVENTS) -> Path:
    """A telemetry folder: the real schemas and dataset.yaml, plus *events*."""
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    for kind, groups in events.items():
        for group, tables in groups.items():
            for table, rows in tables.items():
                path = root / kind / group / f"{table}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def telemetry_writer():
    """`write_telemetry(root, events=EVENTS)` for tests that build their own projects."""
    return write_telemetry


@pytest.fixture(scope="session")
def schemas() -> dict[str, TableSchema]:
    return load_schemas(ROOT / "telemetry" / "schemas")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = write_telemetry(tmp_path_factory.mktemp("telemetry") / "telemetry")
    return build_store(Dataset.load(root), cache_dir=tmp_path_factory.mktemp("cache"), rows=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_store: Store):
    engine = LocalEngine.of_store(tiny_store)
    yield engine
    engine.close()
