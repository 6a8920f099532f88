"""Which clips a checkpoint really trained on: `clips_used.parquet` beside its weights.

A manifest names the clips a run may draw; the run itself skips some (too short for the
stage, failing to decode) and, when it stops before an epoch ends, never draws others. The
trainer counts per clip what happened; the counts are saved with every resumable state (a
resumed run keeps what it trained on before), gathered from every process at the end and
written with the final weights, one row per manifest row:

    clip_id, video_sha256, video_uri, status (used | skipped | not_drawn), reason, times_used
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

FILE = "clips_used.parquet"
STATE_FILE = "clip_usage.json"
SCHEMA = pa.schema([("clip_id", pa.string()), ("video_sha256", pa.string()), ("video_uri", pa.string()),
                    ("status", pa.string()), ("reason", pa.string()), ("times_used", pa.int64())])
NOT_DRAWN = "not drawn: training ended before this clip was sampled"


class ClipUsage:
    """Per-clip counts of one process: draws that reached a batch, and why others were skipped."""

    def __init__(self):
        self.used: Counter[str] = Counter()
        self.skipped: dict[str, str] = {}

    def add_batch(self, batch: dict[str, Any]) -> None:
        self.used.update(batch.get("clip_id") or [])
        for clip_id, reason in batch.get("skipped_items") or []:
            self.skipped.setdefault(clip_id, reason)

    def state(self) -> dict[str, Any]:
        return {"used": dict(self.used), "skipped": self.skipped}

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(self.state(), f)

    @classmethod
    def load(cls, folder: str) -> "ClipUsage":
        usage = cls()
        path = os.path.join(folder, STATE_FILE)
        if os.path.exists(path):
            with open(path) as f:
                usage.merge([json.load(f)])
        return usage

    def merge(self, states: Iterable[dict[str, Any]]) -> "ClipUsage":
        for s in states:
            self.used.update(s.get("used", {}))
            for clip_id, reason in s.get("skipped", {}).items():
                self.skipped.setdefault(clip_id, reason)
        return self


def usage_rows(manifest_rows: list[dict[str, Any]], usage: ClipUsage, excluded: dict[str, str]) -> pa.Table:
    """One row per manifest row: `excluded` are rows the dataset refused up front (clip_id -> reason)."""
    out = []
    for r in manifest_rows:
        cid = r["clip_id"]
        n = usage.used.get(cid, 0)
        if n:
            status, reason = "used", None
        elif cid in excluded or cid in usage.skipped:
            status, reason = "skipped", excluded.get(cid) or usage.skipped[cid]
        else:
            status, reason = "not_drawn", NOT_DRAWN
        out.append({"clip_id": cid, "video_sha256": r.get("video_sha256"), "video_uri": r.get("video_uri"),
                    "status": status, "reason": reason, "times_used": n})
    return pa.Table.from_pylist(out, schema=SCHEMA)


def write_usage(folder: str, table: pa.Table) -> str:
    path = os.path.join(folder, FILE)
    pq.write_table(table, path)
    return path


def summary(table: pa.Table) -> dict[str, int]:
    counts = Counter(table.column("status").to_pylist())
    return {"clips_used": counts.get("used", 0), "clips_skipped": counts.get("skipped", 0),
            "clips_not_drawn": counts.get("not_drawn", 0)}
