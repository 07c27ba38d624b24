"""ctirealm: a pytest-based detection-engineering benchmark and CI gate.

Sub-packages, one concern each (docs/architecture.md draws how they depend on each other):
``telemetry`` (schemas, the generator, the store, labels), ``engine`` (run KQL, serve a
store over the Kusto REST API, push it to a cluster), ``attack``
(bundled ATT&CK), ``sigma`` (parse, validate, convert), ``cases`` (the benchmark tasks, the
upstream importer), ``tools`` (the agent toolbox), ``agents`` (adapters for the agent under
test), ``scoring`` (checkpoints, the run core, results.json), ``plugin`` (pytest hooks),
``report`` (reports from results.json) and ``cli`` (the ``ctirealm`` command).
"""

__version__ = "0.1.0"
