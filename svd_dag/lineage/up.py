"""`svd-dag lineage up`: from a checkpoint back to the raw bytes, in one report.

The report is a plain dict (the `--json` output, `lineage.json` beside the weights):

    checkpoint   the checkpoint asked about (the first link of `chain`)
    chain        it and every parent to stage I: asset, variant, data version, URI, code,
                 clip counts, MLflow run and model, Dagster run, evals, registry versions
    datasets     every dataset version the chain trained on (and their parent versions):
                 thresholds, cutoffs, counts removed per criterion, the annotator snapshot
    raw_videos   per chain link, the raw videos its used clips came from (sha256 in full)
    missing      links that do not resolve to a stored record (empty when complete)

Every answer is SQL on the catalog, aggregated per video, so a 10^6-clip catalog answers
in well under the 2 s the audit asks (benchmarks/lineage.py).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from svd_dag.lineage.records import USED


class LineageError(ValueError):
    """The question names nothing in the record (an unknown checkpoint, an empty catalog)."""


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def find_checkpoint(cat, ref: str, variant: Optional[str] = None) -> dict[str, Any]:
    """The `checkpoints` row `ref` names: an asset name (its current checkpoint),
    `asset@data_version`, a checkpoint URI, or an MLflow model id."""
    if "checkpoints" not in cat.tables():
        raise LineageError("the catalog has no checkpoints yet: materialize a training asset first")
    order = "ORDER BY (variant = '') DESC, created_at DESC LIMIT 1"
    if "://" in ref or ref.startswith("/"):
        rows = cat.records(f"SELECT * FROM checkpoints WHERE rtrim(checkpoint_uri, '/') = ? {order}", [ref.rstrip("/")])
    elif ref.startswith("m-"):
        rows = cat.records(f"SELECT * FROM checkpoints WHERE mlflow_model_id = ? {order}", [ref])
    elif "@" in ref:
        asset, version = ref.split("@", 1)
        rows = cat.records(f"SELECT * FROM checkpoints WHERE asset = ? AND data_version = ? "
                        f"AND (? IS NULL OR variant = ?) {order}", [asset, version, variant, variant])
    else:
        rows = cat.records("SELECT * FROM checkpoints WHERE asset = ? AND variant = ? ORDER BY created_at DESC LIMIT 1",
                        [ref, variant or ""])
    if not rows:
        raise LineageError(f"no checkpoint matches {ref!r}: give an asset name (its current checkpoint), "
                           "asset@data_version, a checkpoint URI or an MLflow model id (m-...)")
    return rows[0]


def parent_of(cat, row: dict[str, Any]) -> Optional[dict[str, Any]]:
    if not row.get("parent_asset"):
        return None
    rows = cat.records("SELECT * FROM checkpoints WHERE asset = ? AND data_version = ? "
                    "ORDER BY (variant = '') DESC, created_at DESC LIMIT 1",
                    [row["parent_asset"], row["parent_data_version"]])
    return rows[0] if rows else None


def chain_of(cat, row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The checkpoint and its parents to the first stage, and the parent links that do not resolve."""
    chain, missing, seen = [row], [], {(row["asset"], row["data_version"])}
    while chain[-1].get("parent_asset"):
        link = chain[-1]
        parent = parent_of(cat, link)
        if parent is None:
            missing.append(f"{link['asset']}@{link['data_version']}: parent {link['parent_asset']}@"
                           f"{link['parent_data_version']} has no checkpoints row")
            break
        if (parent["asset"], parent["data_version"]) in seen:
            missing.append(f"{link['asset']}@{link['data_version']}: the parent chain loops")
            break
        seen.add((parent["asset"], parent["data_version"]))
        chain.append(parent)
    return chain, missing


def dataset_record(cat, version: str, tables: set[str]) -> Optional[dict[str, Any]]:
    rows = cat.records("SELECT * FROM dataset_versions WHERE dataset_version = ?", [version]) \
        if "dataset_versions" in tables else []
    if not rows:
        return None
    row = rows[0]
    report = json.loads(row.get("report") or "{}")
    annotators = cat.records("SELECT * EXCLUDE (dataset_version) FROM dataset_annotators WHERE dataset_version = ? "
                          "ORDER BY annotator", [version]) if "dataset_annotators" in tables else []
    annotators = annotators or report.get("annotators") or []
    return {
        "dataset_version": version, "asset": row["asset"], "manifest_uri": row["manifest_uri"],
        "manifest_sha256": row.get("manifest_sha256"), "kept": row["kept"], "total": row["total"],
        "created_at": _plain(row)["created_at"], "parent_dataset_version": report.get("parent_dataset_version"),
        "thresholds": report.get("thresholds"), "cutoffs": report.get("cutoffs"),
        "removed_by_criterion": report.get("removed_by_criterion") or report.get("removed"),
        "unscored": report.get("unscored"),
        "annotators": [{**a, "random_weights": a.get("weights") == "random"} for a in annotators],
        "weights": report.get("weights"),
    }


def _key(link: dict[str, Any]) -> str:
    return f"{link['asset']}@{link['data_version']}"


def raw_videos_for(cat, links: list[dict[str, Any]], tables: set[str]) -> dict[str, Optional[list[dict[str, Any]]]]:
    """Per link (`asset@data_version`), the raw videos its used clips came from with what the
    inventory knows of each; None for a link with no clip record. One query for the chain."""
    out: dict[str, Optional[list[dict[str, Any]]]] = {_key(link): None for link in links}
    if "checkpoint_clips" not in tables or not links:
        return out
    history = ("LEFT JOIN (SELECT sha256, arg_max(uri, last_seen) AS uri, arg_max(size_bytes, last_seen) AS size_bytes, "
               "bool_or(deleted_at IS NULL AND replaced_at IS NULL) AS present FROM raw_video_history "
               "WHERE sha256 IN (SELECT video_sha256 FROM per_video) GROUP BY sha256) h ON h.sha256 = p.video_sha256"
               ) if "raw_video_history" in tables else \
        "LEFT JOIN (SELECT NULL::VARCHAR AS sha256, NULL::VARCHAR AS uri, NULL::BIGINT AS size_bytes, " \
        "NULL::BOOLEAN AS present) h ON false"
    wanted = {(link["asset"], link["variant"] or "", link["data_version"]) for link in links}
    # A plain IN on data_version lets DuckDB skip the files and row groups of other checkpoints.
    sql = f"""
        WITH per_video AS (
            SELECT asset, variant, data_version, video_sha256, any_value(video_uri) AS video_uri,
                   count(*) FILTER (WHERE status = '{USED}') AS clips_used,
                   count(*) FILTER (WHERE status <> '{USED}') AS clips_not_used
            FROM checkpoint_clips WHERE data_version IN (SELECT unnest($versions)) GROUP BY ALL)
        SELECT p.asset, p.variant, p.data_version, p.video_sha256, coalesce(h.uri, p.video_uri), h.size_bytes,
               p.clips_used, p.clips_not_used,
               CASE WHEN h.present THEN 'present' WHEN h.present IS NULL THEN 'not in the inventory record'
                    ELSE 'deleted or replaced since' END
        FROM per_video p {history} ORDER BY p.asset, p.data_version, p.video_sha256"""
    with cat.connect() as con:  # tuples straight into the report's dicts: 10^5 videos per link at 10^6 clips
        found = con.execute(sql, {"versions": sorted({link["data_version"] for link in links})}).fetchall()
    for asset, variant, version, sha, uri, size, used, not_used, inventory in found:
        if (asset, variant, version) not in wanted:
            continue
        videos = out[f"{asset}@{version}"]
        if videos is None:
            videos = out[f"{asset}@{version}"] = []
        if sha is not None:  # items without a video (orbit objects) count as a record, list no video
            videos.append({"sha256": sha, "uri": uri, "size_bytes": size, "clips_used": used,
                           "clips_not_used": not_used, "inventory": inventory})
    return out


def evals_for(cat, links: list[dict[str, Any]], tables: set[str]) -> dict[str, dict[str, Any]]:
    """Per link, its FVD, multi-view and Elo results (one query per results table)."""
    out: dict[str, dict[str, Any]] = {_key(link): {} for link in links}
    versions = sorted({link["data_version"] for link in links})
    if not links:
        return out
    if "fvd_results" in tables:
        for r in cat.records("SELECT asset, data_version, fvd, n_real, n_fake, features, eval_dataset_version, "
                          "mlflow_run_id, evaluated_at FROM fvd_results WHERE data_version IN (SELECT unnest(?)) "
                          "ORDER BY evaluated_at", [versions]):
            if f"{r['asset']}@{r['data_version']}" in out:
                out[f"{r['asset']}@{r['data_version']}"].setdefault("fvd", []).append(
                    _plain({k: v for k, v in r.items() if k not in ("asset", "data_version")}))
    by_version = {link["data_version"]: _key(link) for link in links}
    if "multiview_results" in tables:
        for r in cat.records("SELECT data_version, avg(psnr) AS psnr, avg(ssim) AS ssim, count(*) AS objects, "
                          "any_value(mlflow_run_id) AS mlflow_run_id FROM multiview_results "
                          "WHERE data_version IN (SELECT unnest(?)) GROUP BY data_version", [versions]):
            out[by_version[r["data_version"]]]["multiview"] = [_plain({k: v for k, v in r.items() if k != "data_version"})]
    if "elo_ratings" in tables:
        names = versions + sorted(out)
        for r in cat.records("SELECT * FROM elo_ratings WHERE model IN (SELECT unnest(?)) ORDER BY axis", [names]):
            key = r["model"] if r["model"] in out else by_version.get(r["model"])
            if key:
                out[key].setdefault("elo", []).append(_plain(r))
    return out


def registry_of(registry, link: dict[str, Any]) -> list[dict[str, Any]]:
    """The registered-model versions holding this checkpoint, with their aliases
    (`registry`: `lineage.registry.registry_for(...)`, or None to leave them out)."""
    if registry is None:
        return []
    name = f"svd-dag.{link['asset']}"
    return [{"registered_model": name, "version": v["version"], "aliases": sorted(v["aliases"])}
            for v in registry(name) if v["tags"].get("svd_dag.data_version") == link["data_version"]]


def link_record(row: dict[str, Any], evals: dict[str, Any], registry=None) -> dict[str, Any]:
    code = json.loads(row["code_record"]) if row.get("code_record") else None
    counts = {k: row.get(k) for k in ("clips_used", "clips_skipped", "clips_not_drawn")}
    return {
        "asset": row["asset"], "variant": row["variant"] or "", "data_version": row["data_version"],
        "checkpoint_uri": row["checkpoint_uri"], "profile": row.get("profile"), "task": row.get("task"),
        "steps": row.get("steps"), "created_at": _plain(row)["created_at"],
        "parent": f"{row['parent_asset']}@{row['parent_data_version']}" if row.get("parent_asset") else None,
        "dataset_asset": row["dataset_asset"], "dataset_version": row["dataset_version"],
        "data_source": row.get("data_source"), "shard_index_uri": row.get("shard_index_uri"),
        "clips_used_uri": row.get("clips_used_uri"), "clips_used_sha256": row.get("clips_used_sha256"),
        "clip_counts": counts if any(v is not None for v in counts.values()) else None,
        "code": code, "mlflow_run_id": row.get("mlflow_run_id"), "mlflow_model_id": row.get("mlflow_model_id"),
        "dagster_run_id": row.get("dagster_run_id"), "weights": row.get("weights"),
        "evals": evals, "registry": registry_of(registry, row),
    }


def lineage_up(cat, ref: str, variant: Optional[str] = None, registry=None, store=None) -> dict[str, Any]:
    """The whole report for the checkpoint `ref` names (see the module docstring); with a
    `store`, links also count as missing when the files they name are gone."""
    from svd_dag.lineage.checks import missing_links

    tables = cat.tables()
    chain_rows, missing = chain_of(cat, find_checkpoint(cat, ref, variant))
    evals = evals_for(cat, chain_rows, tables)
    chain = [link_record(r, evals[_key(r)], registry) for r in chain_rows]
    datasets: dict[str, Any] = {}
    todo = [r["dataset_version"] for r in chain_rows]
    while todo:
        version = todo.pop(0)
        if not version or version in datasets:
            continue
        datasets[version] = dataset_record(cat, version, tables)
        if datasets[version] and datasets[version]["parent_dataset_version"]:
            todo.append(datasets[version]["parent_dataset_version"])
    raw = raw_videos_for(cat, chain_rows, tables)
    report = {"checkpoint": chain[0], "chain": chain, "datasets": datasets, "raw_videos": raw}
    report["missing"] = missing + missing_links(cat, report, tables, store)
    return report
