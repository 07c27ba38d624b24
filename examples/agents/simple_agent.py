#!/usr/bin/env python3
"""A minimal ctirealm command agent in plain Python (standard library only).

It speaks the JSON-lines protocol described in docs/agents.md: it reads the
task from stdin, asks for tools by writing ``tool_call`` lines to stdout,
reads each ``tool_result`` back, and ends with a ``submit`` line. Logs go to
stderr, never stdout.

Its analysis is deliberately naive — pick a table from keywords in the
objective, read its schema, run a survey query and a keyword query, submit
what came back — so it shows the protocol, not how to detect anything.

Run it through ctirealm::

    pytest --realm-agent 'command:"python examples/agents/simple_agent.py"'
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import uuid
from typing import Any

#: Objective words that point at a table (first match wins; order matters).
TABLE_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("kubernetes", "k8s", "pod", "cluster", "kubectl", "api server", "secret"), "AKSAudit"),
    (("service principal",), "AADServicePrincipalSignInLogs"),
    (("sign-in", "signin", "login", "logon", "password spray"), "SigninLogs"),
    (("mailbox", "sharepoint", "exchange", "onedrive"), "OfficeActivity"),
    (("graph api", "microsoft graph"), "MicrosoftGraphActivityLogs"),
    (("blob", "storage account"), "StorageBlobLogs"),
    (("key vault", "keyvault"), "AzureDiagnostics"),
    (("role assignment", "subscription", "resource group", "azure"), "AzureActivity"),
    (("file created", "file write", "dropped", "file"), "DeviceFileEvents"),
]
DEFAULT_TABLE = "DeviceProcessEvents"
#: Columns worth searching for a keyword, most useful first.
TEXT_COLUMNS = (
    "ProcessCommandLine",
    "RequestUri",
    "OperationNameValue",
    "OperationName",
    "FileName",
    "FolderPath",
    "Operation",
    "RequestURI",
    "AppDisplayName",
)
STOPWORDS = {
    "write",
    "detection",
    "identify",
    "monitoring",
    "activity",
    "through",
    "their",
    "which",
    "where",
    "rule",
    "from",
    "with",
    "that",
    "this",
    "by",
    "the",
    "and",
}
_ids = itertools.count(1)


def log(text: str) -> None:
    print(f"[simple_agent] {text}", file=sys.stderr, flush=True)


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def receive() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("ctirealm closed the connection")
    return json.loads(line)


def call(name: str, **arguments: Any) -> str:
    """Ask ctirealm to run one tool and wait for its result text."""
    call_id = f"call-{next(_ids)}"
    send({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})
    reply = receive()
    if reply.get("type") != "tool_result" or reply.get("id") != call_id:
        raise SystemExit(f"unexpected reply to {call_id}: {reply}")
    return reply["content"]


def say(text: str, reasoning: str = "") -> None:
    send({"type": "message", "text": text, "reasoning": reasoning})


def rows_of(result: str) -> list[dict[str, Any]]:
    """Rows of a Kusto-JSON tool result as objects (none when the tool answered with an error)."""
    if result.startswith("Error"):
        return []
    table = json.loads(result)["Tables"][0]
    names = [column["ColumnName"] for column in table["Columns"]]
    return [dict(zip(names, row, strict=True)) for row in table["Rows"]]


def choose_table(objective: str, tables: list[dict[str, Any]]) -> str:
    populated = {t["TableName"] for t in tables if t.get("Rows", 1)} or {t["TableName"] for t in tables}
    text = objective.lower()
    for words, table in TABLE_HINTS:
        if table in populated and any(word in text for word in words):
            return table
    return DEFAULT_TABLE if DEFAULT_TABLE in populated else sorted(populated)[0]


def keywords(objective: str) -> list[str]:
    words = re.findall(r"[a-z][a-z0-9_.-]{3,}", objective.lower())
    unique = [w.strip(".-") for w in dict.fromkeys(words) if w not in STOPWORDS]
    return sorted(unique, key=len, reverse=True)


def sigma_rule(objective: str, table: str, column: str, keyword: str) -> str:
    logsource = {
        "AKSAudit": "  product: kubernetes\n  service: audit",
        "DeviceProcessEvents": "  product: linux\n  category: process_creation",
        "DeviceFileEvents": "  product: linux\n  category: file_event",
    }.get(table, "  product: azure\n  service: activitylogs")
    title = re.sub(r"^write a detection rule to (?:identify|detect)\s+", "", objective, flags=re.I)
    title = re.split(r"\s+by monitoring\s+", title)[0]
    return (
        f"title: {(title[:1].upper() + title[1:])[:70].rstrip()}\n"
        f"id: {uuid.uuid4()}\n"
        "status: experimental\n"
        f"description: {json.dumps(objective)}\n"
        f"logsource:\n{logsource}\n"
        "detection:\n"
        "  selection:\n"
        f"    {column}|contains: {json.dumps(keyword)}\n"
        "  condition: selection\n"
        "level: medium\n"
    )


def main() -> None:
    task = receive()
    assert task["type"] == "task", task
    objective = task["objective"]
    log(f"case {task['case_id']}: {objective}")

    tables = json.loads(call("list_kusto_tables"))
    table = choose_table(objective, tables)
    say(f"The objective points at {table}; I will look at its schema and data.")

    schema = json.loads(call("get_table_schema", table_name=table))
    columns = [c["ColumnName"] for c in schema["Columns"]]
    column = next((c for c in TEXT_COLUMNS if c in columns), columns[0])

    survey = rows_of(call("execute_kql_query", query=f"{table} | take 10"))
    seen = " ".join(str(row.get(column, "")) for row in survey).lower()
    candidates = keywords(objective)
    keyword = next((w for w in candidates if w in seen), candidates[0] if candidates else "a")

    query = f'{table}\n| where tostring({column}) contains "{keyword}"'
    found = rows_of(call("execute_kql_query", query=query))
    rows = found or survey
    say(f"Searching {column} for '{keyword}' returned {len(found)} rows.")

    answer = {
        "sigma_rule": sigma_rule(objective, table, column, keyword),
        "kql_query": query if found else f"{table} | take 10",
        "query_results": rows[:10],
    }
    send({"type": "submit", "answer": answer})


if __name__ == "__main__":
    main()
