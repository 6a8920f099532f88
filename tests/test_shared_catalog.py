"""A catalog that many writers share: DuckLake with Postgres metadata and its tables on S3.

Real components only: a PostgreSQL server (pgserver), moto's S3 server on 127.0.0.1, and
writers in separate OS processes that commit into the same tables at the same time.
"""

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from svd_dag.catalog import Catalog
from svd_dag.lake import LakeConfig, S3Access

WRITER = textwrap.dedent("""
    import json, sys
    import pyarrow as pa
    from svd_dag.catalog import Catalog
    from svd_dag.lake import LakeConfig, S3Access
    metadata, data, who, batches = json.loads(sys.argv[1])
    cat = Catalog(LakeConfig(metadata, data, s3=S3Access.from_env()))
    for b in range(batches):
        # own keys: nothing to conflict on; shared keys: both writers replace the same rows
        own = [{"clip_id": f"{who}-{b}-{i}", "writer": who, "batch": b} for i in range(20)]
        shared = [{"clip_id": f"shared-{i}", "writer": who, "batch": b} for i in range(5)]
        cat.upsert("scores", pa.Table.from_pylist(own + shared), key=["clip_id"])
        cat.quarantine([{"uri": f"s3://raw/{who}-{b}.mp4", "stage": "clips", "reason": f"{who} batch {b}"}])
        cat.upsert(f"only_{who}", pa.Table.from_pylist([{"batch": b}]), key=["batch"])
    print("done", who)
""")


@pytest.fixture()
def shared_lake(postgres, s3_endpoint):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, key="testing", secret="testing")
    bucket = f"lake-{len(fs.ls(''))}"
    fs.mkdir(bucket)
    return LakeConfig(f"postgres:{postgres()}", f"s3://{bucket}/catalog", s3=S3Access.from_env()), fs


def test_two_processes_writing_the_same_tables_at_once_lose_nothing(shared_lake):
    config, fs = shared_lake
    batches = 15
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps([config.metadata, config.data_path, who, batches])],
                                env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for who in ("a", "b")]
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    cat = Catalog(config)
    assert cat.scalar("SELECT count(*) FROM scores WHERE clip_id NOT LIKE 'shared-%'") == 2 * batches * 20
    assert cat.scalar("SELECT count(DISTINCT clip_id) FROM scores") == cat.scalar("SELECT count(*) FROM scores") \
        == 2 * batches * 20 + 5
    assert {r["writer"] for r in cat.rows("SELECT writer FROM scores WHERE clip_id LIKE 'shared-%'")} <= {"a", "b"}
    assert len(cat.quarantined("clips")) == 2 * batches
    assert cat.scalar("SELECT count(*) FROM only_a") == cat.scalar("SELECT count(*) FROM only_b") == batches
    # Small commits are inlined in Postgres until compaction writes them out: then the tables
    # are Parquet objects in the bucket, not files on this machine, and read the same.
    cat.compact()
    assert any(p.endswith(".parquet") for p in fs.find(config.data_path))
    assert cat.scalar("SELECT count(*) FROM scores") == 2 * batches * 20 + 5


def test_every_commit_is_a_snapshot_that_stays_readable(shared_lake):
    config, _ = shared_lake
    cat = Catalog(config)
    cat.upsert("lvd_f", pa.Table.from_pylist([{"clip_id": "x", "v": 1}]), key=["clip_id"])
    before = cat.snapshot()
    cat.replace_table("lvd_f", pa.Table.from_pylist([{"clip_id": "y", "v": 2}]))
    assert cat.rows("SELECT * FROM lvd_f") == [{"clip_id": "y", "v": 2}]
    assert cat.rows(f"SELECT * FROM lvd_f AT (VERSION => {before})") == [{"clip_id": "x", "v": 1}]
    cat.compact()  # merging files keeps every snapshot
    assert cat.rows(f"SELECT * FROM lvd_f AT (VERSION => {before})") == [{"clip_id": "x", "v": 1}]


def test_a_console_connection_is_read_only(shared_lake):
    import duckdb

    config, _ = shared_lake
    cat = Catalog(config)
    cat.upsert("t", pa.Table.from_pylist([{"k": 1}]), key=["k"])
    with cat.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM t")
    assert cat.scalar("SELECT count(*) FROM t") == 1


def test_the_embedded_sqlite_catalog_takes_two_writers_too(tmp_path):
    metadata, data = f"sqlite:{tmp_path / 'catalog.sqlite'}", str(tmp_path / "catalog")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps([metadata, data, who, 8])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    cat = Catalog(LakeConfig(metadata, data))
    assert cat.scalar("SELECT count(*) FROM scores") == 2 * 8 * 20 + 5


CREATOR = textwrap.dedent("""
    import sys, time
    from svd_dag.catalog import Catalog
    from svd_dag.lake import LakeConfig
    metadata, data, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start_at - time.time()))
    assert Catalog(LakeConfig(metadata, data)).scalar("SELECT 1") == 1
""")


def test_processes_that_open_a_fresh_sqlite_catalog_at_once_all_get_it(tmp_path):
    """The first open of the embedded catalog creates its file; several processes doing that
    at the same instant must all succeed (a raced PRAGMA journal_mode=WAL failed with
    "database is locked"), leaving one WAL-mode file and no private leftovers."""
    import sqlite3
    import time

    path = tmp_path / "catalog.sqlite"
    start_at = time.time() + 4.0  # past every interpreter's imports
    creators = [subprocess.Popen([sys.executable, "-c", CREATOR, f"sqlite:{path}", str(tmp_path / "data"),
                                  str(start_at)], stderr=subprocess.PIPE, text=True) for _ in range(8)]
    for c in creators:
        _, err = c.communicate(timeout=120)
        assert c.returncode == 0, err[-2000:]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("catalog.sqlite.")) == []


def test_a_process_that_loses_the_creation_race_leaves_the_winners_file_alone(tmp_path):
    import sqlite3

    from svd_dag.lake import _new_sqlite_in_wal_mode

    path = tmp_path / "catalog.sqlite"
    with sqlite3.connect(path) as winner:
        winner.execute("PRAGMA journal_mode=WAL")
        winner.execute("CREATE TABLE ducklake_metadata (key TEXT)")
        winner.execute("INSERT INTO ducklake_metadata VALUES ('mine')")
        _new_sqlite_in_wal_mode(str(path))  # the loser, while the winner has it open
        assert winner.execute("SELECT key FROM ducklake_metadata").fetchall() == [("mine",)]
    assert [p.name for p in tmp_path.iterdir() if ".new" in p.name] == []
