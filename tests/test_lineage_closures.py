"""`lineage up`, `down` and the eval-leak check against brute-force closures computed in
plain Python over the same tables, on random synthetic catalogs (tests/lineage_catalog.py)
in a real DuckLake."""

import random

import pytest

import lineage_catalog
from svd_dag.catalog import Catalog
from svd_dag.lake import LakeConfig, S3Access
from svd_dag.lineage.checks import eval_leaks
from svd_dag.lineage.down import lineage_down
from svd_dag.lineage.up import LineageError, chain_of, find_checkpoint, lineage_up


@pytest.fixture(scope="module", params=[11, 12, 13, "postgres+s3"])
def record(request, tmp_path_factory):
    """Three seeds on the embedded catalog, and one on the production kind: Postgres metadata, tables on S3."""
    if request.param == "postgres+s3":
        import s3fs

        postgres, endpoint = request.getfixturevalue("postgres"), request.getfixturevalue("s3_endpoint")
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing")
        fs.mkdir("lineage-closures")
        cat, seed = Catalog(LakeConfig(f"postgres:{postgres()}", "s3://lineage-closures/catalog",
                                       s3=S3Access.from_env())), 14
    else:
        cat, seed = Catalog.embedded(str(tmp_path_factory.mktemp(f"lineage-{request.param}"))), request.param
    rng = random.Random(seed)
    built = lineage_catalog.build(cat, videos=rng.randint(8, 25), clips_per_video=rng.randint(1, 5),
                                  versions=rng.randint(1, 3), checkpoints=rng.randint(4, 12), seed=seed)
    tables = {name: cat.rows(f"SELECT * FROM {name}") for name in
              ("checkpoints", "checkpoint_clips", "dataset_members", "filter_decisions", "clip_history",
               "raw_video_history", "lvd_f_eval")}
    return {"cat": cat, "rng": rng, **built, "t": tables}


def _chain(t, row):
    by_key = {(c["asset"], c["data_version"]): c for c in t["checkpoints"]}
    chain = [row]
    while chain[-1]["parent_asset"]:
        chain.append(by_key[(chain[-1]["parent_asset"], chain[-1]["parent_data_version"])])
    return chain


def test_up_matches_the_brute_force_chain_and_videos(record):
    t = record["t"]
    for row in t["checkpoints"]:
        report = lineage_up(record["cat"], f"{row['asset']}@{row['data_version']}")
        chain = _chain(t, row)
        assert [(c["asset"], c["data_version"]) for c in report["chain"]] == [(c["asset"], c["data_version"]) for c in chain]
        for link in chain:
            used: dict[str, int] = {}
            for u in t["checkpoint_clips"]:
                if u["data_version"] == link["data_version"] and u["status"] == "used":
                    used[u["video_sha256"]] = used.get(u["video_sha256"], 0) + 1
            got = report["raw_videos"][f"{link['asset']}@{link['data_version']}"]
            assert {v["sha256"]: v["clips_used"] for v in got if v["clips_used"]} == used
        assert set(report["datasets"]) == {c["dataset_version"] for c in chain}


def test_down_matches_the_brute_force_forward_closure(record):
    t, rng = record["t"], record["rng"]
    for video in rng.sample(t["raw_video_history"], min(6, len(t["raw_video_history"]))):
        sha = video["sha256"]
        report = lineage_down(record["cat"], sha)
        clips = {c["clip_id"] for c in t["clip_history"] if c["video_sha256"] == sha}
        assert {c["clip_id"] for c in report["clips"]} == clips
        direct = {(u["asset"], u["data_version"]) for u in t["checkpoint_clips"]
                  if u["video_sha256"] == sha and u["status"] == "used"}
        fed, grew = set(direct), True
        while grew:
            children = {(c["asset"], c["data_version"]) for c in t["checkpoints"]
                        if (c["parent_asset"], c["parent_data_version"]) in fed}
            grew = not children <= fed
            fed |= children
        assert {(c["asset"], c["data_version"]) for c in report["checkpoints"]} == fed
        for version in record["versions"]:
            expected = {}
            for clip in clips:
                member = {m["dataset_version"] for m in t["dataset_members"] if m["clip_id"] == clip}
                removed = [d for d in t["filter_decisions"] if d["clip_id"] == clip and d["dataset_version"] == version
                           and d["decision"] == "removed"]
                expected[clip] = ("held out for evaluation" if f"{version}-eval" in member else
                                  "kept" if version in member else "removed" if removed else None)
            got = {c["clip_id"]: c["outcome"] for c in report["datasets"].get(version, {"clips": []})["clips"]}
            assert got == {k: v for k, v in expected.items() if v is not None}
        assert lineage_down(record["cat"], video["uri"])["videos"].keys() == {sha}  # by uri too


def test_eval_leaks_match_the_brute_force_intersection(record):
    t, cat = record["t"], record["cat"]
    current_eval = {r["dataset_version"] for r in t["lvd_f_eval"]}
    for row in t["checkpoints"]:
        chain = _chain(t, row)
        evals = {f"{c['dataset_version']}-eval" for c in chain} | current_eval
        held = {m["clip_id"] for m in t["dataset_members"] if m["dataset_version"] in evals}
        keys = {(c["asset"], c["data_version"]) for c in chain}
        used = {u["clip_id"] for u in t["checkpoint_clips"]
                if (u["asset"], u["data_version"]) in keys and u["status"] == "used"}
        got = eval_leaks(cat, chain_of(cat, find_checkpoint(cat, f"{row['asset']}@{row['data_version']}"))[0])
        assert got["passed"] == (not used & held)
        assert {leak["clip_id"] for leak in got["leaks"]} <= used & held


def test_unknown_references_are_clear_errors(record):
    with pytest.raises(LineageError, match="no checkpoint matches"):
        lineage_up(record["cat"], "stage1_image_checkpoint@0000")
    with pytest.raises(LineageError, match="neither a sha256"):
        lineage_down(record["cat"], "/nowhere.mp4")
