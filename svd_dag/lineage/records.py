"""Writing a checkpoint's part of the record: the clips it trained on, into the catalog.

`clips_used.parquet` beside the weights is the record that travels with the checkpoint;
`checkpoint_clips` is the same rows in the catalog, keyed by the checkpoint's (asset,
variant, data_version), so `svd-dag lineage down` finds every checkpoint a raw video fed
with one query. Rows are streamed from the file in batches (10^6 clips never sit in Python
at once) and replace the checkpoint's rows in one transaction, so a rerun never duplicates.
"""

from __future__ import annotations

import os
import tempfile

import duckdb

from svd_dag.storage import Store, file_sha256

CHECKPOINT_CLIPS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoint_clips (
    asset VARCHAR, variant VARCHAR, data_version VARCHAR, clip_id VARCHAR, video_sha256 VARCHAR,
    video_uri VARCHAR, status VARCHAR, reason VARCHAR, times_used BIGINT)
"""
USED = "used"


def record_checkpoint_clips(cat, store: Store, asset: str, variant: str, data_version: str,
                            clips_used_uri: str) -> str:
    """Copy a checkpoint's `clips_used.parquet` into `checkpoint_clips`; returns the file's sha256."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="clips-used-") as tmp:
        local = store.local_path(clips_used_uri)
        if local is None:
            local = os.path.join(tmp, "clips_used.parquet")
            with store.open(clips_used_uri) as src, open(local, "wb") as dst:
                for block in iter(lambda: src.read(8 * 2**20), b""):
                    dst.write(block)
        digest = file_sha256(local)
        data = pq.ParquetFile(local)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(CHECKPOINT_CLIPS_DDL)
            con.execute("DELETE FROM checkpoint_clips WHERE asset = ? AND variant = ? AND data_version = ?",
                        [asset, variant, data_version])
            for batch in data.iter_batches(batch_size=100_000):
                con.register("used_batch", batch)
                con.execute("""INSERT INTO checkpoint_clips SELECT ?, ?, ?, clip_id, video_sha256, video_uri, status,
                               reason, times_used FROM used_batch ORDER BY video_sha256, clip_id""",
                            [asset, variant, data_version])
                con.unregister("used_batch")

        cat.write(write)
    return digest
