"""`svd-dag lineage down`: from a raw video (its sha256, or a uri) forward to every model it fed.

The report (`--json`):

    videos       each sha256 asked about (a uri may have held several): uris, first/last seen,
                 deleted or replaced
    clips        every clip ever cut from those bytes (`clip_history`)
    datasets     per dataset version, each clip's outcome: kept, held out for evaluation,
                 removed (criterion, value, cutoff) or unscored
    checkpoints  every checkpoint the video fed, directly (its clips are in the checkpoint's
                 clips_used) or through a parent, with evals and registry aliases
"""

from __future__ import annotations

import re
from typing import Any

from svd_dag.lineage.records import USED
from svd_dag.lineage.up import LineageError, _key, _plain, evals_for, registry_of

SHA256 = re.compile(r"[0-9a-f]{64}")
EVAL_SUFFIX = "-eval"


def resolve_videos(cat, ref: str, tables: set[str]) -> list[str]:
    if SHA256.fullmatch(ref.lower()):
        return [ref.lower()]
    found: set[str] = set()
    for table in ("raw_video_history", "raw_videos"):
        if table in tables:
            found |= {r["sha256"] for r in cat.records(f"SELECT DISTINCT sha256 FROM {table} WHERE uri = ? "
                                                    "AND sha256 IS NOT NULL", [ref])}
    if not found:
        raise LineageError(f"{ref!r} is neither a sha256 (64 hex digits) nor a uri any inventory has seen")
    return sorted(found)


def _clips(cat, shas: list[str], tables: set[str]) -> list[dict[str, Any]]:
    parts = [f"SELECT clip_id, video_sha256, video_uri, start_frame, end_frame, start_s, end_s FROM {t} "
             "WHERE video_sha256 IN (SELECT unnest($shas))" for t in ("clip_history", "clips") if t in tables]
    if not parts:
        return []
    return cat.records(f"SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)}) ORDER BY video_sha256, start_frame",
                    {"shas": shas})


def _outcomes(cat, shas: list[str], clip_ids: list[str], tables: set[str]) -> dict[str, Any]:
    """{dataset version: {asset, clips: {clip_id: {outcome, criteria}}}}; eval parts fold into their version."""
    out: dict[str, Any] = {}

    def entry(version: str, asset: str) -> dict[str, Any]:
        base = version.removesuffix(EVAL_SUFFIX)
        return out.setdefault(base, {"asset": asset.removesuffix("_eval") if version.endswith(EVAL_SUFFIX) else asset,
                                     "clips": {}})

    if "dataset_members" in tables:
        for r in cat.records("SELECT dataset_version, asset, clip_id FROM dataset_members "
                          "WHERE video_sha256 IN (SELECT unnest(?)) ORDER BY 1, 3", [shas]):
            held = r["dataset_version"].endswith(EVAL_SUFFIX)
            entry(r["dataset_version"], r["asset"])["clips"][r["clip_id"]] = {
                "outcome": "held out for evaluation" if held else "kept", "criteria": []}
    if "filter_decisions" in tables and clip_ids:
        decisions = cat.records("SELECT dataset_version, clip_id, criterion, value, cutoff, decision FROM filter_decisions "
                             "WHERE clip_id IN (SELECT unnest(?)) AND decision <> 'kept' ORDER BY 1, 2, 3", [clip_ids])
        assets = _assets_of(cat, decisions) if decisions and "dataset_versions" in tables else {}
        for r in decisions:
            clip = entry(r["dataset_version"], assets.get(r["dataset_version"], "?"))["clips"].setdefault(
                r["clip_id"], {"outcome": None, "criteria": []})
            clip["criteria"].append({"criterion": r["criterion"], "decision": r["decision"], "value": r["value"],
                                     "cutoff": r["cutoff"]})
            if clip["outcome"] in (None, "unscored"):
                clip["outcome"] = "removed" if r["decision"] == "removed" else "unscored"
    return out


def _assets_of(cat, decisions: list[dict[str, Any]]) -> dict[str, str]:
    return {r["dataset_version"]: r["asset"] for r in cat.records(
        "SELECT dataset_version, asset FROM dataset_versions WHERE dataset_version IN (SELECT unnest(?))",
        [sorted({d["dataset_version"] for d in decisions})])}


def _fed_checkpoints(cat, shas: list[str], member_versions: list[str], tables: set[str]) -> list[dict[str, Any]]:
    if "checkpoints" not in tables:
        return []
    checkpoints = cat.records("SELECT asset, variant, data_version, checkpoint_uri, parent_asset, parent_data_version, "
                           "dataset_version, mlflow_run_id, mlflow_model_id, dagster_run_id, created_at FROM checkpoints")
    recorded = set()
    direct: dict[tuple, dict[str, Any]] = {}
    if "checkpoint_clips" in tables:
        recorded = {(r["asset"], r["variant"], r["data_version"]) for r in
                    cat.records("SELECT DISTINCT asset, variant, data_version FROM checkpoint_clips")}
        for r in cat.records(f"SELECT asset, variant, data_version, count(*) AS clips FROM checkpoint_clips "
                          f"WHERE video_sha256 IN (SELECT unnest(?)) AND status = '{USED}' GROUP BY ALL", [shas]):
            direct[(r["asset"], r["variant"], r["data_version"])] = {"how": "trained on its clips",
                                                                     "clips_used": r["clips"]}
    for c in checkpoints:  # checkpoints from before clips were recorded: by their dataset's membership
        key = (c["asset"], c["variant"], c["data_version"])
        if key not in recorded and c["dataset_version"] in member_versions:
            direct[key] = {"how": "its dataset version holds the clips (no clips_used record)", "clips_used": None}
    by_parent: dict[tuple, list] = {}
    for c in checkpoints:
        by_parent.setdefault((c["parent_asset"], c["parent_data_version"]), []).append(c)
    found = {k: v for k, v in direct.items()}
    frontier = list(direct)
    while frontier:
        asset, _, version = frontier.pop()
        for child in by_parent.get((asset, version), []):
            key = (child["asset"], child["variant"], child["data_version"])
            if key not in found:
                found[key] = {"how": f"through its parent {asset}@{version}", "clips_used": None}
                frontier.append(key)
    rows = {(c["asset"], c["variant"], c["data_version"]): c for c in checkpoints}
    return [{**_plain(rows[k]), **found[k]} for k in sorted(found) if k in rows]


def lineage_down(cat, ref: str, registry=None) -> dict[str, Any]:
    tables = cat.tables()
    shas = resolve_videos(cat, ref, tables)
    videos = {sha: [] for sha in shas}
    if "raw_video_history" in tables:
        for r in cat.records("SELECT * FROM raw_video_history WHERE sha256 IN (SELECT unnest(?)) ORDER BY first_seen",
                          [shas]):
            videos[r["sha256"]].append(_plain(r))
    clips = _clips(cat, shas, tables)
    datasets = _outcomes(cat, shas, [c["clip_id"] for c in clips], tables)
    members = [v for v, d in datasets.items() if any(c["outcome"] == "kept" for c in d["clips"].values())]
    fed = _fed_checkpoints(cat, shas, members, tables)
    evals = evals_for(cat, fed, tables)
    for f in fed:
        f["evals"] = evals[_key(f)]
        f["registry"] = registry_of(registry, f)
    return {"query": ref, "videos": videos, "clips": [_plain(c) for c in clips],
            "datasets": {v: {"asset": d["asset"], "clips": [{"clip_id": k, **c} for k, c in sorted(d["clips"].items())]}
                         for v, d in datasets.items()},
            "checkpoints": fed}
