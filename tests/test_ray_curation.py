"""Curation on a real Ray cluster (loopback: a head with no CPUs, two 1-CPU workers), by
configuration alone: SVD_DAG_EXECUTOR=ray and SVD_DAG_RAY_ADDRESS, raw videos and every
artefact on S3 (moto's server on 127.0.0.1), since workers on other machines could not read
a local path.

`clips` runs one Ray task per video on the worker nodes; `motion_scores` and
`clip_embeddings` run on pools of Ray actors (one model each). The catalog is written by
the asset process alone, and every row equals what the local backend writes.
"""

import dagster as dg
import numpy as np
import pytest

import synth
from svd_dag.catalog import Catalog
from svd_dag.curation.embedding_files import read_frame_embeddings
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings
from svd_dag.storage import Store

ASSETS = ["raw_videos", "clips", "motion_scores", "clip_embeddings"]


def curate(tmp, name: str, env: dict) -> tuple:
    settings = load_settings({"SVD_DAG_HOME": str(tmp / name), "SVD_DAG_RAW_URI": "s3://ray-raw/videos",
                              "SVD_DAG_STORAGE_URI": f"s3://ray-{name}/svd", "SVD_DAG_MODELS_URI": str(tmp / "models"),
                              **env})
    Store(settings.storage_uri).fs.mkdir(f"ray-{name}")
    job = build_defs(settings).resolve_job_def("recuration")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                    asset_selection=[dg.AssetKey(a) for a in ASSETS])
    assert result.success
    return Catalog.from_settings(settings), Store(settings.storage_uri), result


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory, bikes_path):
    tmp = tmp_path_factory.mktemp("ray_curation")
    raw = Store("s3://ray-raw/videos")
    raw.fs.mkdir("ray-raw")
    raw.write_bytes("bikes.mp4", open(bikes_path, "rb").read())
    for name, make in (("pan.mp4", synth.moving_video), ("fade.mp4", synth.crossfade_video),
                       ("one_frame.mp4", synth.one_frame_video)):  # one frame: no clip of 1 s, a VideoError
        make(str(tmp / name))
        raw.write_bytes(name, open(tmp / name, "rb").read())
    local = curate(tmp, "local", {"SVD_DAG_EXECUTOR": "local"})
    on_ray = curate(tmp, "ray", {"SVD_DAG_EXECUTOR": "ray", "SVD_DAG_RAY_ADDRESS": ray_cluster["address"]})
    return {"local": local, "ray": on_ray}


def rows(cat: Catalog, sql: str) -> list[dict]:
    return cat.rows(sql)


def test_clips_ran_on_the_worker_nodes_with_the_local_backends_rows(runs, ray_cluster):
    (local, _, _), (ray_cat, ray_store, _) = runs["local"], runs["ray"]
    strip = "SELECT * EXCLUDE (samples_uri) FROM clips ORDER BY clip_id"
    assert rows(ray_cat, strip) == rows(local, strip) and len(rows(local, strip)) >= 4
    nodes = {r["worker_node"] for r in rows(ray_cat, "SELECT worker_node FROM video_scans")}
    assert nodes and nodes <= ray_cluster["workers"]
    assert {r["worker_node"] for r in rows(local, "SELECT worker_node FROM video_scans")} == {None}
    samples = rows(ray_cat, "SELECT DISTINCT samples_uri FROM clips")
    assert all(s["samples_uri"].startswith("s3://ray-ray/svd/samples/") and ray_store.exists(s["samples_uri"])
               for s in samples)


def test_a_broken_video_is_quarantined_with_the_same_reason_on_ray(runs):
    reasons = {name: [(r["uri"], r["reason"]) for r in runs[name][0].quarantined("clips")] for name in runs}
    assert reasons["ray"] == reasons["local"]
    [(uri, reason)] = reasons["ray"]
    assert uri == "s3://ray-raw/videos/one_frame.mp4" and "no clip of at least 1 s" in reason


def meta(result, asset: str) -> dict:
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
             if e.event_specific_data.materialization.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in mat.metadata.items()}


def test_annotator_actors_write_the_local_backends_scores(runs, ray_cluster):
    (local, local_store, local_result), (ray_cat, ray_store, result) = runs["local"], runs["ray"]
    for asset in ("motion_scores", "clip_embeddings"):
        assert set(meta(result, asset)["ray_nodes"]) <= ray_cluster["workers"] and meta(result, asset)["ray_nodes"]
        assert meta(local_result, asset)["ray_nodes"] == []
    motion = "SELECT * EXCLUDE (annotated_at) FROM motion_scores ORDER BY clip_id"
    assert rows(ray_cat, motion) == rows(local, motion)
    assert {(r["device"], r["dtype"]) for r in rows(ray_cat, "SELECT device, dtype FROM clip_embeddings")} == \
        {("cpu", "fp32")}
    emb = {name: {r["clip_id"]: r for r in rows(cat, "SELECT clip_id, embeddings_uri, model_version, weights "
                                                     "FROM clip_embeddings")}
           for name, cat in (("local", local), ("ray", ray_cat))}
    assert emb["ray"].keys() == emb["local"].keys()
    for cid, r in emb["ray"].items():
        assert (r["model_version"], r["weights"]) == (emb["local"][cid]["model_version"], "random")
        on_ray = read_frame_embeddings(ray_store, r["embeddings_uri"], [cid]).frames
        here = read_frame_embeddings(local_store, emb["local"][cid]["embeddings_uri"], [cid]).frames
        np.testing.assert_allclose(on_ray, here, atol=2e-3)  # float16 files; same weights, same frames
    assert meta(result, "clip_embeddings")["placement"].startswith("cpu/fp32")
