"""Small helpers shared by asset modules: code versions, metadata values."""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
from pathlib import Path
from typing import Any

import dagster as dg

from svd_dag.transient_errors import is_transient

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STORAGE_RETRIES = 3  # step retries after a transient storage error, waiting 2, 4, 8 s


def retry_transient_errors(compute):
    """Under `@dg.asset`: a transient storage or network error (a dropped connection, a timeout,
    S3 asking to slow down: `svd_dag.transient_errors`) asks Dagster to run the step again, up to
    STORAGE_RETRIES times with a growing wait. Assets commit their work per batch, so a retry
    redoes only the batch in flight. Any other error fails the step at once: it would fail the
    same way again."""
    def retry_or_raise(context, error: Exception):
        if isinstance(error, dg.RetryRequested) or not is_transient(error):
            raise error
        wait = 2 ** (context.retry_number + 1)
        context.log.warning(f"transient storage error, retry {context.retry_number + 1}/{STORAGE_RETRIES} in {wait} s: "
                            f"{type(error).__name__}: {error}")
        raise dg.RetryRequested(max_retries=STORAGE_RETRIES, seconds_to_wait=wait) from error

    if inspect.isgeneratorfunction(compute):
        @functools.wraps(compute)
        def run_generator(context, *args, **kwargs):
            try:
                yield from compute(context, *args, **kwargs)
            except Exception as error:
                retry_or_raise(context, error)
        return run_generator

    @functools.wraps(compute)
    def run(context, *args, **kwargs):
        try:
            return compute(context, *args, **kwargs)
        except Exception as error:
            retry_or_raise(context, error)
    return run


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


def link_metadata(link: str) -> dg.MetadataValue:
    """A link for the UI: a real URL becomes a clickable URL value; anything else (how to open a
    local MLflow store, when no UI serves it) stays text."""
    return dg.MetadataValue.url(link) if link.startswith(("http://", "https://")) else dg.MetadataValue.text(link)


def md_table(rows: list[dict[str, Any]], total: int | None = None, table: str = "") -> dg.MetadataValue:
    """A Markdown table of `rows`; with `total` above their number, a line says these are the first
    of `total` and that `table` holds them all."""
    if not rows:
        return dg.MetadataValue.md("_none_")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    if total is not None and total > len(rows):
        lines += ["", f"The first {len(rows):,} of {total:,}; `{table}` holds them all."]
    return dg.MetadataValue.md("\n".join(lines))
