"""The SigmaHQ rule index behind ``search_sigma_rules``.

Ships 368 SigmaHQ rules (linux, azure, m365, kubernetes) under the Detection
Rule License 1.1: every result carries the rule's author, as the licence asks.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

LICENSE_NOTE = "SigmaHQ rule, Detection Rule License 1.1; author: {author}"

#: Platform words an agent may use -> logsource products they cover.
PLATFORMS: dict[str, tuple[str, ...]] = {
    "linux": ("linux",),
    "azure": ("azure",),
    "m365": ("m365",),
    "office365": ("m365",),
    "kubernetes": ("kubernetes",),
    "k8s": ("kubernetes",),
    "aks": ("kubernetes",),
    "cloud": ("azure", "m365"),
}


@lru_cache(maxsize=1)
def load_index() -> list[dict[str, Any]]:
    text = resources.files("ctirealm.tools").joinpath("data/sigmahq_index.json").read_text(encoding="utf-8")
    return json.loads(text)["rules"]


def search(
    keyword: str = "", technique_id: str = "", platform: str = "", limit: int = 5
) -> list[dict[str, Any]]:
    """Rules whose title or description contains *keyword*, filtered by technique and platform."""
    keyword = (keyword or "").strip().lower()
    technique = (technique_id or "").strip().upper()
    products = PLATFORMS.get((platform or "").strip().lower()) if platform else None
    if platform and products is None:
        raise ValueError(f"unknown platform {platform!r}; use one of {', '.join(sorted(PLATFORMS))}")
    found = []
    for rule in load_index():
        text = f"{rule.get('title', '')}\n{rule.get('description', '')}".lower()
        if keyword and keyword not in text:
            continue
        techniques = [t.upper() for t in rule.get("attack_techniques", [])]
        if technique and not any(
            t == technique or t.startswith(technique + ".") or technique.startswith(t + ".")
            for t in techniques
        ):
            continue
        if products and rule.get("logsource", {}).get("product") not in products:
            continue
        found.append(
            {
                "title": rule.get("title"),
                "id": rule.get("id"),
                "description": rule.get("description"),
                "author": rule.get("author"),
                "level": rule.get("level"),
                "status": rule.get("status"),
                "logsource": rule.get("logsource"),
                "techniques": techniques,
                "detection": rule.get("detection"),
                "license": LICENSE_NOTE.format(author=rule.get("author") or "unknown"),
            }
        )
        if len(found) >= limit:
            break
    return found
