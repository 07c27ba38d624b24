"""In-repo pytest defaults for the benchmark.

The ``ctirealm`` plugin (installed with the package) collects ``cases/`` and
``rules/`` and provides every fixture. This file is where a user plugs in their
own agent without touching the benchmark: define ``realm_agent`` here and it
overrides the one built from ``--realm-agent``. For example::

    import pytest
    from my_team.agents import DetectionAgent

    @pytest.fixture(scope="session")
    def realm_agent():
        # any object with run(task, tools) -> {"sigma_rule", "kql_query", "query_results"}
        return DetectionAgent(model="...")

Without such a fixture the agent comes from ``--realm-agent`` (default: the
built-in ``baseline``). See docs/agents.md for the contract.
"""
