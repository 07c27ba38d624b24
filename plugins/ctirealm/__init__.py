"""ctirealm: a pytest-based detection-engineering benchmark and CI gate.

Sub-packages, one concern each: ``telemetry`` (schemas, events, the store),
``engine`` (run KQL), ``attack`` (bundled ATT&CK), ``cases`` (the benchmark
tasks), ``cli`` (the ``ctirealm`` command) and ``plugin`` (pytest hooks).
"""

__version__ = "0.1.0"
