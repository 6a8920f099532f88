"""A random synthetic lineage record in a real catalog, built in SQL (10^6 clips in seconds).

Every table `svd-dag lineage` reads, with the shapes the assets write: raw videos (some
deleted), clips, `lvd_f` versions whose clips are kept, removed by a criterion or held out,
a forest of checkpoints (random parents and dataset versions) and the clips each used.
Draws come from DuckDB's `hash` of a seed, so a seed names one catalog. Shared by
tests/test_lineage.py (brute-force closures at small sizes) and benchmarks/lineage.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random

import pyarrow as pa

CRITERIA = ("motion", "text", "aesthetics", "caption_similarity")
ASSETS = ("stage1_image_checkpoint", "stage2_video_checkpoint", "stage3_hq_checkpoint", "i2v_checkpoint")
T0 = dt.datetime(2026, 1, 1)


def _version(seed: int, d: int) -> str:
    return hashlib.sha256(f"{seed}:lvd:{d}".encode()).hexdigest()[:16]


def build(cat, videos: int, clips_per_video: int, versions: int, checkpoints: int, seed: int = 0) -> dict:
    """Write the record; returns {"versions": [...], "checkpoints": [rows]}."""
    rnd = lambda key: f"(hash({seed}, {key}) % 1000000) / 1000000.0"  # noqa: E731 - a uniform draw in SQL
    version_ids = [_version(seed, d) for d in range(versions)]

    def write(con):
        con.execute(f"""CREATE OR REPLACE TABLE raw_video_history AS
            SELECT '/raw/v' || i || '.mp4' AS uri, sha256('{seed}:v' || i) AS sha256, (1000 + i)::BIGINT AS size_bytes,
                   TIMESTAMP '2026-01-01' AS first_seen, TIMESTAMP '2026-01-02' AS last_seen,
                   CASE WHEN {rnd("'del' || i")} < 0.05 THEN TIMESTAMP '2026-01-03' END AS deleted_at,
                   NULL::TIMESTAMP AS replaced_at, NULL::VARCHAR AS replaced_by
            FROM range({videos}) t(i)""")
        con.execute(f"""CREATE OR REPLACE TABLE clip_history AS
            SELECT substr(v.sha256, 1, 16) || '-' || j AS clip_id, v.sha256 AS video_sha256, v.uri AS video_uri,
                   (j * 100)::BIGINT AS start_frame, (j * 100 + 90)::BIGINT AS end_frame, j * 4.0 AS start_s,
                   j * 4.0 + 3.6 AS end_s, 'k' AS scan_key, TIMESTAMP '2026-01-01' AS first_seen
            FROM raw_video_history v, range({clips_per_video}) t(j) ORDER BY video_sha256, j""")
        con.execute("CREATE OR REPLACE TEMP TABLE version_ids (d INTEGER, v VARCHAR)")
        con.executemany("INSERT INTO version_ids VALUES (?, ?)", list(enumerate(version_ids)))
        con.execute(f"""CREATE OR REPLACE TEMP TABLE outcome AS
            SELECT c.clip_id, c.video_sha256, i.v AS version, {rnd("c.clip_id || i.v")} AS r,
                   hash({seed}, c.clip_id, i.v, 'crit') % {len(CRITERIA)} AS crit
            FROM clip_history c, version_ids i""")
        con.execute("""CREATE OR REPLACE TABLE dataset_members AS
            SELECT CASE WHEN r < 0.1 THEN version || '-eval' ELSE version END AS dataset_version,
                   CASE WHEN r < 0.1 THEN 'lvd_f_eval' ELSE 'lvd_f' END AS asset, clip_id, video_sha256
            FROM outcome WHERE r < 0.1 OR r >= 0.4 ORDER BY dataset_version, video_sha256, clip_id""")
        criteria = ", ".join(f"('{c}', {i})" for i, c in enumerate(CRITERIA))
        con.execute(f"""CREATE OR REPLACE TABLE filter_decisions AS
            SELECT o.clip_id, k.criterion, o.r AS value, 0.3 AS cutoff, 0.25 AS fraction,
                   CASE WHEN o.r >= 0.1 AND o.r < 0.4 AND k.idx = o.crit THEN 'removed' ELSE 'kept' END AS decision,
                   o.version AS dataset_version
            FROM outcome o, (VALUES {criteria}) k(criterion, idx)""")
        rows = []
        for v in version_ids:
            report = {"thresholds": {"eval_split_by": "clip", "remove_fractions": {c: 0.25 for c in CRITERIA}},
                      "cutoffs": {c: 0.3 for c in CRITERIA}, "annotators": []}
            rows += [{"dataset_version": v, "asset": "lvd_f", "manifest_uri": f"/data/lvd_f/{v}/manifest.parquet",
                      "kept": 0, "total": 0, "report": json.dumps(report), "created_at": T0, "manifest_sha256": None},
                     {"dataset_version": f"{v}-eval", "asset": "lvd_f_eval", "kept": 0, "total": 0,
                      "manifest_uri": f"/data/lvd_f/{v}/eval_manifest.parquet", "manifest_sha256": None,
                      "report": json.dumps({"parent": v}), "created_at": T0}]
        con.register("dv", pa.Table.from_pylist(rows))
        con.execute("CREATE OR REPLACE TABLE dataset_versions AS SELECT * FROM dv")
        con.unregister("dv")
        con.execute("CREATE OR REPLACE TABLE lvd_f_eval AS SELECT ? AS dataset_version", [f"{version_ids[-1]}-eval"])
        ckpts = _checkpoint_rows(seed, checkpoints, version_ids)
        con.register("ck", pa.Table.from_pylist(ckpts))
        con.execute("CREATE OR REPLACE TABLE checkpoints AS SELECT * FROM ck")
        con.unregister("ck")
        con.execute(f"""CREATE OR REPLACE TABLE checkpoint_clips AS
            SELECT k.asset, k.variant, k.data_version, m.clip_id, m.video_sha256, '/raw/x.mp4' AS video_uri,
                   CASE WHEN {rnd("m.clip_id || k.data_version")} < 0.7 THEN 'used' ELSE 'not_drawn' END AS status,
                   NULL::VARCHAR AS reason, 1::BIGINT AS times_used
            FROM checkpoints k JOIN dataset_members m ON m.dataset_version = k.dataset_version
            ORDER BY k.data_version, m.video_sha256, m.clip_id""")
        return ckpts

    ckpts = cat.write(write)
    return {"versions": version_ids, "checkpoints": ckpts}


def _checkpoint_rows(seed: int, n: int, versions: list[str]) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    for i in range(n):
        parent = rows[rng.randrange(len(rows))] if rows and rng.random() < 0.75 else None
        depth = 0 if parent is None else min(ASSETS.index(parent["asset"]) + 1, len(ASSETS) - 1)
        rows.append({
            "asset": ASSETS[depth], "variant": "", "data_version": hashlib.sha256(f"{seed}:ck:{i}".encode()).hexdigest()[:16],
            "checkpoint_uri": f"/data/checkpoints/{i}", "parent_asset": parent["asset"] if parent else None,
            "parent_data_version": parent["data_version"] if parent else None, "dataset_asset": "lvd_f",
            "dataset_version": rng.choice(versions), "manifest_uri": "", "data_source": "reference",
            "shard_index_uri": None, "profile": "tiny", "task": "text", "steps": 1, "mlflow_run_id": f"run{i}",
            "mlflow_model_id": f"m-{i}", "dagster_run_id": f"dagster{i}", "created_at": T0 + dt.timedelta(minutes=i),
            "code_record": json.dumps({"git_commit": "unknown"}), "clips_used_uri": None, "clips_used_sha256": None,
            "clips_used": None, "clips_skipped": None, "clips_not_drawn": None, "weights": "synthetic"})
    return rows
