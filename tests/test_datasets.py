"""Dataset versions: content digests in SQL, published once, reused when nothing changed."""

import duckdb
import pyarrow.parquet as pq
import pytest

from svd_dag.catalog import Catalog
from svd_dag.curation.datasets import DatasetPart, publish_dataset, relation_digest
from svd_dag.storage import Store


@pytest.fixture()
def con():
    c = duckdb.connect()
    c.execute("CREATE TABLE t AS SELECT 'c' || i AS clip_id, (i * 0.5)::DOUBLE AS score, NULL::VARCHAR AS caption FROM range(1000) r(i)")
    yield c
    c.close()


def test_the_digest_is_of_content_not_of_order(con):
    base = relation_digest(con, "SELECT * FROM t")
    assert base[1] == 1000
    assert relation_digest(con, "SELECT * FROM t ORDER BY score DESC") == base
    assert relation_digest(con, "SELECT * FROM t WHERE clip_id <> 'c7'")[0] != base[0]
    con.execute("UPDATE t SET score = score + 1e-9 WHERE clip_id = 'c3'")
    changed = relation_digest(con, "SELECT * FROM t")
    assert changed[0] != base[0]
    con.execute("UPDATE t SET caption = '' WHERE clip_id = 'c3'")  # NULL and '' are different content
    assert relation_digest(con, "SELECT * FROM t")[0] != changed[0]
    assert relation_digest(con, "SELECT clip_id, score AS other_name, caption FROM t")[0] != \
        relation_digest(con, "SELECT * FROM t")[0]  # column names count


def test_a_version_is_published_once_and_reused(tmp_path):
    cat, store = Catalog.embedded(str(tmp_path / "cat")), Store(str(tmp_path / "data"))
    cat.append("scores", pq.read_table(_parquet(tmp_path)))

    def publish(sql, inputs):
        return cat.write(lambda con: publish_dataset(con, store, [DatasetPart("ds", sql)], version_inputs=inputs,
                                                     report={}, folder="ds", total=3))

    first = publish("SELECT * FROM scores ORDER BY clip_id", {"t": 1})
    again = publish("SELECT * FROM scores ORDER BY clip_id DESC", {"t": 1})
    assert again.version == first.version and again.reused and not first.reused
    other = publish("SELECT * FROM scores ORDER BY clip_id", {"t": 2})  # same rows, other thresholds
    assert other.version != first.version
    assert pq.read_table(first.manifest_uris["ds"]).column("dataset_version").to_pylist() == [first.version] * 3
    assert cat.rows("SELECT DISTINCT dataset_version FROM ds") == [{"dataset_version": other.version}]
    assert {r["dataset_version"] for r in cat.rows("SELECT dataset_version FROM dataset_versions")} == \
        {first.version, other.version}


def _parquet(tmp_path):
    import pyarrow as pa

    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"clip_id": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]}), path)
    return path


def test_an_empty_eval_split_is_named_as_the_cause_with_the_setting_to_change(tmp_path):
    """A published but empty lvd_f_eval (10% of a few clips hashes to none) is not reported as
    "not materialized": the error says the split is empty and which setting changes that."""
    from svd_dag.curation.datasets import current_dataset

    cat, store = Catalog.embedded(str(tmp_path / "cat")), Store(str(tmp_path / "data"))
    cat.append("scores", pq.read_table(_parquet(tmp_path)))
    with pytest.raises(RuntimeError, match="lvd_f_eval has no current version: materialize it first"):
        current_dataset(cat, "lvd_f_eval")
    cat.write(lambda con: publish_dataset(
        con, store, [DatasetPart("lvd_f", "SELECT * FROM scores ORDER BY clip_id"),
                     DatasetPart("lvd_f_eval", "SELECT * FROM scores WHERE score > 9 ORDER BY clip_id",
                                 file="eval_manifest.parquet", suffix="-eval")],
        version_inputs={}, report={}, folder="lvd_f", total=3))
    assert current_dataset(cat, "lvd_f")["kept"] == 3
    with pytest.raises(RuntimeError, match=r"lvd_f_eval's current version \w+-eval holds no clip: the held-out "
                                           r"split is empty.*raise lvd_f's eval_fraction"):
        current_dataset(cat, "lvd_f_eval")
