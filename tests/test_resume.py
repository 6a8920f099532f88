"""Resumable training state, in process on the tiny stage I: a resume skips the batches it had
trained on, state on S3 (moto) resumes in a fresh home with an empty disk, and a bf16 run
keeps its frozen models in bf16 while the checkpoint stores them as they came."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svd_dag.training.config import TrainConfig

SHOTS = [(0, 30), (30, 76), (76, 137)]


@pytest.fixture()
def manifest(tmp_path, bikes_path) -> str:
    rows = [{"clip_id": f"bikes-{a}", "video_uri": bikes_path, "start_frame": a, "end_frame": b, "fps": 25.0,
             "motion_score": 5.0, "caption": "bikes"} for a, b in SHOTS]
    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _cfg(tmp_path, manifest: str, name: str, **kw) -> TrainConfig:
    defaults = dict(stage="image", profile="tiny", manifest_uri=manifest, output_uri=str(tmp_path / "out" / name),
                    state_dir=str(tmp_path / "state"), num_frames=1, batch_size=1, sample_count=0, seed=3)
    cfg = TrainConfig(**{**defaults, **kw}).validate()
    os.makedirs(cfg.state_dir, exist_ok=True)
    return cfg


def _train(cfg: TrainConfig, mixed_precision: str = "no") -> dict:
    import dataclasses

    from accelerate.state import AcceleratorState

    from svd_dag.training.train import train, training_accelerator

    # A process-wide singleton: a run in another precision needs a fresh one, and leaves none behind.
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return train(cfg, training_accelerator(dataclasses.replace(cfg, mixed_precision=mixed_precision), cpu=True))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def _times_used(checkpoint_uri: str) -> dict:
    return {r["clip_id"]: r["times_used"] for r in pq.read_table(f"{checkpoint_uri}/clips_used.parquet").to_pylist()}


def test_a_resumed_run_trains_on_the_batches_a_straight_run_does(tmp_path, manifest):
    """3 clips, batch 1: 4 steps are epoch 0 (3 batches) and the first batch of epoch 1. A run
    stopped after 2 steps and resumed must train on clip order[2] and then epoch 1's first;
    replaying epoch 0 from its start (the old behaviour) would use 6 batches instead of 4."""
    straight = _train(_cfg(tmp_path, manifest, "straight", steps=4, checkpoint_every=4, state_dir=str(tmp_path / "s1")))
    first = _train(_cfg(tmp_path, manifest, "first", steps=2, checkpoint_every=2, state_dir=str(tmp_path / "s2")))
    resumed = _train(_cfg(tmp_path, manifest, "resumed", steps=4, checkpoint_every=2, state_dir=str(tmp_path / "s2")))
    assert first["resumed_from"] is None and resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert sum(_times_used(straight["checkpoint_uri"]).values()) == 4
    assert _times_used(resumed["checkpoint_uri"]) == _times_used(straight["checkpoint_uri"])
    assert resumed["samples_seen"] == straight["samples_seen"] == 4  # counted across the restart


def test_state_on_s3_resumes_in_a_fresh_home_with_an_empty_disk(tmp_path, manifest, s3_endpoint):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("train-state")
    state_uri = "s3://train-state/run-a"
    first = _train(_cfg(tmp_path, manifest, "a", steps=2, checkpoint_every=2, state_uri=state_uri,
                        state_dir=str(tmp_path / "home1")))
    assert first["state_uri"] == state_uri
    saved = {p.removeprefix("train-state/run-a/") for p in fs.find(state_uri)}
    assert {"step-2/.complete", "step-2/progress.json", "step-2/random_states_0.pkl",
            "step-2/usage-0/clip_usage.json", "step-2/model.safetensors"} <= saved
    assert not os.path.exists(tmp_path / "home1" / "machine-0" / "step-2")  # uploaded, local copy dropped
    resumed = _train(_cfg(tmp_path, manifest, "b", steps=4, checkpoint_every=2, state_uri=state_uri,
                          state_dir=str(tmp_path / "home2")))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert sum(_times_used(resumed["checkpoint_uri"]).values()) == 4
    assert {p.split("/")[2] for p in fs.find(state_uri) if "/step-" in p} == {"step-2", "step-4"}
    assert json.loads(fs.cat(f"{state_uri}/step-4/progress.json")) == {"step": 4, "micro_batches": 4, "samples": 4}


def test_a_bf16_run_keeps_frozen_models_in_bf16_and_exports_them_unrounded(tmp_path, manifest):
    """Continue a stage-I checkpoint under bf16 autocast on the CPU: the frozen VAE runs in
    bf16, and the checkpoint's VAE is the parent's, bit for bit (a bf16 round trip would not be)."""
    import torch
    from safetensors.torch import load_file

    parent = _train(_cfg(tmp_path, manifest, "parent", steps=1, checkpoint_every=1, vae_fit_steps=5,
                         state_dir=str(tmp_path / "p")))
    child = _train(_cfg(tmp_path, manifest, "child", steps=2, checkpoint_every=2, init_from=parent["checkpoint_uri"],
                        state_dir=str(tmp_path / "c")), mixed_precision="bf16")
    assert child["frozen_dtype"] == "bfloat16" and parent["frozen_dtype"] == "float32"
    vae = "vae/diffusion_pytorch_model.safetensors"
    before, after = load_file(f"{parent['checkpoint_uri']}/{vae}"), load_file(f"{child['checkpoint_uri']}/{vae}")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and after[name].equal(tensor), name
    assert any(t.to(torch.bfloat16).float().ne(t).any() for t in before.values())  # bf16 would round
