"""The two lineage checks that gate the registry.

- `missing_links`: every link `lineage up` follows resolves to a stored record (catalog
  rows, and the files they name when a store is given). Empty means `lineage_complete`.
- `eval_leaks`: no clip of an evaluation split (and, for a split drawn by video, no video of
  it) is among the clips the checkpoint or any ancestor trained on. The splits checked are
  the held-out parts of every `lvd_f` version the chain touched plus the current
  `lvd_f_eval` (what `fvd_eval` scores against).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from svd_dag.lineage.records import USED

CLIP_DATASETS = ("lvd_f", "hq_finetune_set")  # datasets whose versions carry an annotator snapshot
LEAK_EXAMPLES = 20


def _exists(store, uri: Optional[str]) -> bool:
    return bool(uri) and store.exists(uri)


def missing_links(cat, report: dict[str, Any], tables: set[str], store=None) -> list[str]:
    out = []
    for link in report["chain"]:
        name = f"{link['asset']}@{link['data_version']}"
        if store is not None and not _exists(store, f"{link['checkpoint_uri']}/svd_dag_training.json"):
            out.append(f"{name}: checkpoint folder {link['checkpoint_uri']} is missing or incomplete")
        if report["datasets"].get(link["dataset_version"]) is None:
            out.append(f"{name}: dataset version {link['dataset_version']} has no dataset_versions row")
        if report["raw_videos"].get(name) is None:
            out.append(f"{name}: no record of the clips it trained on (checkpoint_clips / clips_used.parquet)")
        if not link.get("code"):
            out.append(f"{name}: no record of the code that trained it")
        if not link.get("mlflow_run_id"):
            out.append(f"{name}: no MLflow run")
    for version, ds in report["datasets"].items():
        if ds is None:
            continue
        if ds["asset"] in CLIP_DATASETS and not ds["annotators"]:
            out.append(f"dataset {version}: no annotator snapshot")
        if store is not None and not _exists(store, ds["manifest_uri"]):
            out.append(f"dataset {version}: manifest {ds['manifest_uri']} is missing")
        parent = ds.get("parent_dataset_version")
        if parent and report["datasets"].get(parent) is None:
            out.append(f"dataset {version}: parent version {parent} has no dataset_versions row")
    for name, videos in report["raw_videos"].items():
        for v in videos or []:
            if v["clips_used"] and v["inventory"] == "not in the inventory record":
                out.append(f"{name}: raw video {v['sha256']} is in no inventory (raw_video_history)")
    return out


def _eval_versions(cat, chain_rows: list[dict[str, Any]], tables: set[str]) -> dict[str, str]:
    """{eval dataset version: how it is split ("clip" | "video")}."""
    versions: set[str] = set()
    for r in chain_rows:
        versions.add(r["dataset_version"])
        parent = cat.records("SELECT report FROM dataset_versions WHERE dataset_version = ?", [r["dataset_version"]]) \
            if "dataset_versions" in tables else []
        if parent and (pv := json.loads(parent[0]["report"] or "{}").get("parent_dataset_version")):
            versions.add(pv)
    found = {f"{v}-eval" for v in versions}
    if "lvd_f_eval" in tables:
        found |= {r["dataset_version"] for r in cat.records("SELECT DISTINCT dataset_version FROM lvd_f_eval")}
    if "dataset_versions" not in tables:
        return {}
    out = {}
    for row in cat.records("SELECT dataset_version FROM dataset_versions WHERE dataset_version IN (SELECT unnest(?))",
                        [sorted(found)]):
        base = cat.records("SELECT report FROM dataset_versions WHERE dataset_version = ?",
                        [row["dataset_version"].removesuffix("-eval")])
        thresholds = json.loads(base[0]["report"] or "{}").get("thresholds") or {} if base else {}
        out[row["dataset_version"]] = thresholds.get("eval_split_by") or "clip"
    return out


def eval_leaks(cat, chain_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{"passed", "eval_versions", "leaks": [{checkpoint, clip_id, video_sha256, eval_version, by}]}."""
    tables = cat.tables()
    splits = _eval_versions(cat, chain_rows, tables)
    if not splits or "dataset_members" not in tables:
        return {"passed": True, "eval_versions": sorted(splits), "leaks": [], "leak_count": 0}
    used_parts, params = [], []
    for r in chain_rows:
        used_parts.append("(asset = ? AND variant = ? AND data_version = ?)")
        params += [r["asset"], r["variant"] or "", r["data_version"]]
    used = (f"SELECT asset || '@' || data_version AS checkpoint, clip_id, video_sha256 FROM checkpoint_clips "
            f"WHERE status = '{USED}' AND ({' OR '.join(used_parts)})") if "checkpoint_clips" in tables else \
        "SELECT NULL::VARCHAR AS checkpoint, NULL::VARCHAR AS clip_id, NULL::VARCHAR AS video_sha256 WHERE false"
    by_video = [v for v, how in splits.items() if how == "video"]
    sql = f"""
        WITH used AS ({used}),
             held AS (SELECT dataset_version, clip_id, video_sha256 FROM dataset_members
                      WHERE dataset_version IN (SELECT unnest(?)))
        SELECT u.checkpoint, u.clip_id, u.video_sha256, h.dataset_version AS eval_version,
               CASE WHEN u.clip_id = h.clip_id THEN 'clip' ELSE 'video' END AS by
        FROM used u JOIN held h ON u.clip_id = h.clip_id
             OR (u.video_sha256 = h.video_sha256 AND list_contains(?, h.dataset_version))
        ORDER BY 1, 2"""
    with cat.connect() as con:
        leaks = con.execute(f"SELECT count(*) FROM ({sql})", [*params, sorted(splits), by_video]).fetchone()[0]
        examples = con.execute(f"{sql} LIMIT {LEAK_EXAMPLES}", [*params, sorted(splits), by_video]).fetchall()
    cols = ("checkpoint", "clip_id", "video_sha256", "eval_version", "by")
    return {"passed": leaks == 0, "eval_versions": sorted(splits), "leak_count": int(leaks),
            "leaks": [dict(zip(cols, e)) for e in examples]}
