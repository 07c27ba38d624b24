"""The task prompt agents are given, in the project's own words, and the seeded notes."""

from __future__ import annotations

from importlib import resources

SYSTEM_PROMPT = """\
You are a detection engineer. You will be given a detection objective. Work like an analyst:
1. Find the threat-intelligence reports that describe the behaviour (list the report tags, read
   the relevant reports).
2. Name the MITRE ATT&CK techniques involved, with their ids (e.g. T1053.003).
3. Find the telemetry tables that record the behaviour: list the tables, read their schemas,
   look at sample rows.
4. Write KQL queries and run them, refining until the query returns the malicious activity
   and not the normal activity around it.
5. Write a Sigma rule for the same behaviour.

When you are done, answer with a single JSON object and nothing else:
{"sigma_rule": "<the Sigma rule as YAML text>",
 "kql_query": "<your final KQL query>",
 "query_results": [<rows your final query returned from execute_kql_query, as column: value objects>]}
You may check the answer with validate_output_json before giving it. query_results must be rows
that execute_kql_query actually returned.
"""


def user_message(objective: str) -> str:
    """The first user message: the objective, in the reference's framing."""
    return f"DETECTION OBJECTIVE:\n{objective.strip()}"


def seeded_notes() -> str:
    """Guidance given up front in the ``seeded`` variant (workflow, tool tips, patterns)."""
    return resources.files(__package__).joinpath("data/seeded_notes.md").read_text(encoding="utf-8")
