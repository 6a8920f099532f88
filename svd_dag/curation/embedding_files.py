"""CLIP embeddings in their own Parquet files, float16, one file per committed batch.

At 10^8 clips, three key-frame embeddings of 768 floats each are ~1.4 TB as DuckDB doubles
and far more as Python floats; as float16 fixed-size arrays in Parquet on object storage
they are ~0.5 TB that no database has to hold. The catalog table `clip_embeddings` keeps
one small row per clip naming its file; readers (aesthetics, caption similarity) read
the files a batch at a time. Files are named by the hash of their content and written
once.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svd_dag.storage import Store

STORAGE_DTYPE = np.float16


def embedding_schema(dim: int) -> pa.Schema:
    vec = pa.list_(pa.float16(), dim)
    return pa.schema([("clip_id", pa.string()), ("embedding", vec), ("frame_embeddings", pa.list_(vec))])


def write_embedding_file(store: Store, folder: str, clip_ids: list[str], frames: list[np.ndarray]) -> str:
    """One file holding each clip's frame embeddings (n_frames x dim) and their normalised mean."""
    dim = int(frames[0].shape[1])
    means = []
    for f in frames:
        m = f.astype(np.float32).mean(axis=0)
        means.append(m / max(float(np.linalg.norm(m)), 1e-12))
    flat = np.concatenate([f.astype(STORAGE_DTYPE) for f in frames]).reshape(-1)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), dim)
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in frames])]).astype(np.int32)
    table = pa.Table.from_arrays(
        [pa.array(clip_ids, pa.string()),
         pa.FixedSizeListArray.from_arrays(pa.array(np.stack(means).astype(STORAGE_DTYPE).reshape(-1), pa.float16()), dim),
         pa.ListArray.from_arrays(pa.array(offsets), vectors)],
        schema=embedding_schema(dim))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    return store.write_once(f"{folder}/{hashlib.sha256(data).hexdigest()[:24]}.parquet", data)


@dataclass
class FrameEmbeddings:
    """Frame embeddings of several clips stacked: clip i owns rows offsets[i]:offsets[i+1]."""

    clip_ids: list[str]
    frames: np.ndarray  # (total frames, dim) float32
    offsets: np.ndarray  # (clips + 1,)

    def per_clip_mean(self, values: np.ndarray) -> np.ndarray:
        """Mean of a per-frame value (e.g. a score) over each clip's frames."""
        sums = np.add.reduceat(values, self.offsets[:-1]) if len(self.clip_ids) else np.zeros(0)
        return sums / np.diff(self.offsets)

    def per_frame(self, per_clip: np.ndarray) -> np.ndarray:
        """Each clip's row of `per_clip` repeated once per frame of that clip (rows align with `frames`)."""
        return np.repeat(per_clip, np.diff(self.offsets), axis=0)


def read_frame_embeddings(store: Store, uri: str, clip_ids: list[str] | None = None) -> FrameEmbeddings:
    """The frame embeddings in `uri` (of `clip_ids` only, in file order, when given), as float32."""
    table = pq.read_table(store.open(uri, "rb"), columns=["clip_id", "frame_embeddings"])
    if clip_ids is not None:
        table = table.filter(pc.is_in(table.column("clip_id"), value_set=pa.array(clip_ids, pa.string())))
    column = table.column("frame_embeddings").combine_chunks()
    dim = column.type.value_type.list_size
    counts = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return FrameEmbeddings(table.column("clip_id").to_pylist(), values,
                           np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
