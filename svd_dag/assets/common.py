"""Small helpers shared by asset modules: code versions, metadata values."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import dagster as dg

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def source_version(*relpaths: str, extra: str = "") -> str:
    """Code version = hash of the domain modules that compute an asset (read, not imported).

    Editing the code that produces an asset marks it stale in the UI without anyone having
    to remember to bump a version string.
    """
    h = hashlib.sha256(extra.encode())
    for rel in relpaths:
        h.update((PACKAGE_ROOT / rel).read_bytes())
    return h.hexdigest()[:12]


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def uri_metadata(uri: str) -> dg.MetadataValue:
    return dg.MetadataValue.path(uri) if "://" not in uri else dg.MetadataValue.url(uri)


def md_table(rows: list[dict[str, Any]]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_none_")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))
