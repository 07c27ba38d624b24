"""Sigma: parse, validate (SigmaHQ validators, offline), convert to KQL for the 12 tables.

Executing a converted rule is the scoring layer's one detection evaluator
(`ctirealm.scoring.detection.evaluate_rule`).
"""

#: Validators left out by default: ``tlptag`` already accepts both TLP versions, which the
#: version-specific ones would flag against each other.
DEFAULT_EXCLUDE: frozenset[str] = frozenset({"tlpv1_tag", "tlpv2_tag"})

#: Validators about a rule's file name, for rule sets that follow their own naming.
FILENAME_VALIDATORS: frozenset[str] = frozenset(
    {
        "sigmahq_filename_convention",
        "sigmahq_filename_prefix",
        "filename_length",
        "duplicate_filename",
    }
)
