"""`svd-dag sql` / `svd-dag tables`: the installed console script over a real catalog."""

import csv
import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from svd_dag.catalog import Catalog
from svd_dag.settings import load_settings

SCRIPT = os.path.join(os.path.dirname(sys.executable), "svd-dag")


@pytest.fixture()
def home(tmp_path):
    cat = Catalog.from_settings(load_settings({"SVD_DAG_HOME": str(tmp_path)}))
    cat.upsert("dataset_versions", pa.Table.from_pylist([
        {"dataset_version": "abc", "asset": "lvd_f", "kept": 3, "report": '{"x": 1}'},
        {"dataset_version": "def", "asset": "hq_finetune_set", "kept": 1, "report": None}]), key=["dataset_version"])
    return str(tmp_path)


def _run(home: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env={**os.environ, "SVD_DAG_HOME": home})


def test_sql_prints_csv_and_json(home):
    out = _run(home, "sql", "SELECT dataset_version, kept FROM dataset_versions ORDER BY 1")
    assert out.returncode == 0, out.stderr
    assert list(csv.reader(io.StringIO(out.stdout))) == [["dataset_version", "kept"], ["abc", "3"], ["def", "1"]]
    out = _run(home, "sql", "--json", "SELECT * FROM dataset_versions WHERE asset = 'lvd_f'")
    assert json.loads(out.stdout) == [{"dataset_version": "abc", "asset": "lvd_f", "kept": 3, "report": '{"x": 1}'}]
    assert json.loads(_run(home, "sql", "--json", "SELECT * FROM dataset_versions WHERE false").stdout) == []


def test_sql_is_read_only_and_errors_are_clear(home, tmp_path):
    out = _run(home, "sql", "DELETE FROM dataset_versions")
    assert out.returncode != 0 and "read-only" in out.stderr
    assert Catalog.from_settings(load_settings({"SVD_DAG_HOME": home})).scalar("SELECT count(*) FROM dataset_versions") == 2
    missing = _run(str(tmp_path / "nowhere"), "sql", "SELECT 1")
    assert missing.returncode != 0 and "no catalog at" in missing.stderr
    assert "nope" in _run(home, "sql", "SELECT * FROM nope").stderr


def test_tables_lists_every_table(home):
    out = _run(home, "tables")
    assert out.returncode == 0 and "dataset_versions" in out.stdout
