"""A checkpoint's own lineage documents: `lineage.json` (what `lineage up` says) and
`DATASHEET.md`, written beside its weights, plus the two checks that gate the registry.

The documents describe the checkpoint as it was made. They are new files in the
checkpoint's folder, written once: a re-materialization that resumed the same weights keeps
the first ones (the live view, with later evals and aliases, is `svd-dag lineage up`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from svd_dag.lineage.checks import eval_leaks
from svd_dag.lineage.render import datasheet
from svd_dag.lineage.up import lineage_up

LINEAGE_FILE = "lineage.json"
DATASHEET_FILE = "DATASHEET.md"


@dataclass
class LineageVerdict:
    """The two blocking checks of a checkpoint: its lineage resolves, and no evaluation clip leaked into training."""

    report: dict[str, Any]
    leaks: dict[str, Any]

    @property
    def complete(self) -> bool:
        return not self.report["missing"]

    @property
    def no_leak(self) -> bool:
        return bool(self.leaks["passed"])

    def why_not(self) -> Optional[str]:
        if not self.complete:
            return "lineage incomplete: " + "; ".join(self.report["missing"][:5])
        if not self.no_leak:
            return f"evaluation leak: {self.leaks['leak_count']} held-out clips among the training clips"
        return None


def judge(cat, asset: str, data_version: str, variant: Optional[str] = None, store=None) -> LineageVerdict:
    report = lineage_up(cat, f"{asset}@{data_version}", variant, store=store)
    return LineageVerdict(report, eval_leaks(cat, report["chain"]))  # its links carry the keys the check needs


def write_documents(store, checkpoint_uri: str, verdict: LineageVerdict) -> dict[str, str]:
    """lineage.json and DATASHEET.md in the checkpoint folder (kept when already there); their URIs and the Markdown."""
    base = checkpoint_uri.rstrip("/")
    text = datasheet(verdict.report, verdict.leaks)
    docs = {LINEAGE_FILE: json.dumps({**verdict.report, "eval_leak_check": verdict.leaks}, indent=2, sort_keys=True,
                                     default=str).encode(),
            DATASHEET_FILE: text.encode()}
    for name, data in docs.items():
        if not store.exists(f"{base}/{name}"):
            store.write_bytes(f"{base}/{name}", data)
    return {"lineage_uri": f"{base}/{LINEAGE_FILE}", "datasheet_uri": f"{base}/{DATASHEET_FILE}",
            "datasheet": store.read_bytes(f"{base}/{DATASHEET_FILE}").decode()}
