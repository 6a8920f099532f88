"""Global batch = micro-batch x processes x gradient accumulation: the full presets reach the
paper's global batches at 1, 8 and 64 processes, and a CPU run with accumulation takes one
optimizer step per `gradient_accumulation` micro-batches."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svd_dag.training.config import STAGE_PRESETS, TrainConfig, resolve_batch

PAPER_GLOBAL = {"stage1": 256, "stage2": 1536, "stage3": 768, "i2v": 768, "i2v25": 768}  # SPEC section 3


def _full(stage: str) -> TrainConfig:
    return TrainConfig(profile="full", manifest_uri="", output_uri="", state_dir="", orbits_uri="orbits",
                       **STAGE_PRESETS[stage]["full"]).validate()


@pytest.mark.parametrize("processes", [1, 8, 64])
def test_full_presets_resolve_to_the_papers_global_batch(processes):
    for stage, global_batch in PAPER_GLOBAL.items():
        cfg = _full(stage).with_processes(processes)
        assert cfg.batch_size * processes * cfg.gradient_accumulation == global_batch, (stage, processes)
        assert cfg.batch_size <= STAGE_PRESETS[stage]["full"]["batch_size"]
    stage2 = _full("stage2").with_processes(processes)
    assert (stage2.batch_size, stage2.gradient_accumulation) == {1: (8, 192), 8: (8, 24), 64: (8, 3)}[processes]
    stage1 = _full("stage1").with_processes(processes)
    assert (stage1.batch_size, stage1.gradient_accumulation) == {1: (32, 8), 8: (32, 1), 64: (4, 1)}[processes]


def test_every_full_preset_splits_over_8_gpus_and_an_impossible_split_is_refused():
    for stage, presets in STAGE_PRESETS.items():
        cfg = _full(stage).with_processes(8)
        assert cfg.batch_size * 8 * cfg.gradient_accumulation == presets["full"]["global_batch"], stage
    with pytest.raises(ValueError, match="global batch of 16 cannot be split over 64 processes"):
        _full("multiview").with_processes(64)
    with pytest.raises(ValueError, match="cannot be split over 5 processes"):
        resolve_batch(1536, 8, 5)
    assert resolve_batch(1536, 8, 3) == (8, 64)
    assert resolve_batch(0, 4, 2) == (4, 1)  # no global batch: no accumulation


def test_a_cpu_run_with_accumulation_steps_once_per_accumulated_micro_batches(tmp_path, bikes_path):
    """...with two DataLoader worker processes decoding the clips (their draws still reach clips_used)."""
    from svd_dag.training.train import train, training_accelerator

    rows = [{"clip_id": f"bikes-{a}", "video_uri": bikes_path, "start_frame": a, "end_frame": b, "fps": 25.0,
             "motion_score": 5.0, "caption": "bikes"} for a, b in [(0, 30), (30, 76), (76, 137)]]
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    cfg = TrainConfig(stage="image", profile="tiny", manifest_uri=str(manifest), output_uri=str(tmp_path / "out"),
                      state_dir=str(tmp_path / "state"), num_frames=1, steps=3, batch_size=1, global_batch=2,
                      checkpoint_every=3, sample_count=0, dataloader_workers=2).validate().with_processes(1)
    assert cfg.gradient_accumulation == 2
    (tmp_path / "state").mkdir()
    result = train(cfg, training_accelerator(cfg, cpu=True))
    assert result["steps"] == 3 and result["samples_seen"] == 6  # 3 optimizer steps x 2 micro-batches of 1
    assert (result["micro_batch"], result["processes"], result["gradient_accumulation"], result["global_batch"]) == \
        (1, 1, 2, 2)
    used = pq.read_table(f"{result['checkpoint_uri']}/clips_used.parquet").to_pylist()
    assert sum(u["times_used"] for u in used) == 6
