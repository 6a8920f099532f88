"""The OpenLineage export: every materialization of the session's curation and training runs
as a RunEvent, valid against the OpenLineage schema, with the catalog's edges.

Schema validation: no installable package ships the official OpenLineage JSON schema
(`OpenLineage.json`; the client wheel carries only the classes generated from it, and
openlineage-integration-common only integration facets), so every JSON line is structured
back, strictly, into the client's schema-generated classes (`openlineage.client.event_v2`
and the facet classes): every key must be a field of its class, every required field
present with the right type, enums in their enum, run ids UUIDs, times RFC 3339 with a
zone, and every facet a known class with its own `_schemaURL` and a `_producer`.
"""

from __future__ import annotations

import json
import threading
import types
import typing
import uuid
from datetime import datetime
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attr
import dagster as dg
import pytest
from openlineage.client.event_v2 import RunEvent
from openlineage.client.facet_v2 import (DatasetFacet, InputDatasetFacet, JobFacet, OutputDatasetFacet, RunFacet,
                                         dataset_version_dataset, job_type_job, output_statistics_output_dataset,
                                         parent_run, tags_run)

from conftest import STAGES
from svd_dag.jobs.lineage import export_new_materializations, openlineage_export_sensor
from svd_dag.lineage.openlineage import (OpenLineageEmitter, SvdDagDatasetFacet, SvdDagRunFacet, read_events,
                                         run_id_for)
from svd_dag.resources import OpenLineageResource

# The facets an event of ours may carry, by the facet map they sit in and their key.
FACETS = {
    (DatasetFacet, "version"): dataset_version_dataset.DatasetVersionDatasetFacet,
    (DatasetFacet, "svd_dag"): SvdDagDatasetFacet,
    (OutputDatasetFacet, "outputStatistics"): output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
    (RunFacet, "svd_dag"): SvdDagRunFacet,
    (RunFacet, "parent"): parent_run.ParentRunFacet,
    (RunFacet, "tags"): tags_run.TagsRunFacet,  # added by the client: its own version
    (JobFacet, "jobType"): job_type_job.JobTypeJobFacet,
}
FACET_BASES = (DatasetFacet, InputDatasetFacet, OutputDatasetFacet, RunFacet, JobFacet)
JSON_SCALARS = (str, int, float, bool, type(None))


def _check_json(value, where):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            _check_json(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
    else:
        assert isinstance(value, JSON_SCALARS), f"{where}: {type(value).__name__} is not JSON"


def _value(hint, value, where):
    """`value` (parsed JSON) as the type `hint` says, or an AssertionError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        assert value is not None or type(None) in args, f"{where}: null"
        if value is None:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _value(inner, value, where)
    if hint is typing.Any:
        _check_json(value, where)
        return value
    if origin is list:
        assert isinstance(value, list), f"{where}: not a list"
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        assert isinstance(value, dict), f"{where}: not an object"
        base = args[1]
        if isinstance(base, type) and issubclass(base, FACET_BASES):
            out = {}
            for key, facet in value.items():
                cls = FACETS.get((base, key))
                assert cls is not None, f"{where}.{key}: no {base.__name__} of that name in the schema"
                assert isinstance(facet, dict) and isinstance(facet.get("_producer"), str) and facet["_producer"], \
                    f"{where}.{key}: no _producer"
                assert facet.get("_schemaURL") == cls._get_schema(), f"{where}.{key}: _schemaURL"
                out[key] = _structure(cls, facet, f"{where}.{key}")
            return out
        return {k: _value(base, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Enum):
        assert value in {e.value for e in hint}, f"{where}: {value!r} not in {hint.__name__}"
        return hint(value)
    if attr.has(hint):
        return _structure(hint, value, where)
    if hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: not a number"
        return value
    if hint is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: not an integer"
        return value
    assert isinstance(value, hint), f"{where}: {type(value).__name__}, not {hint.__name__}"
    return value


def _structure(cls, data, where):
    """An instance of the attrs class `cls` from `data`: unknown keys and missing required
    fields fail; the class's own validators run (UUIDs, date-times, URIs)."""
    assert isinstance(data, dict), f"{where}: not an object"
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attr.fields(cls)}
    unknown = set(data) - set(fields)
    assert not unknown, f"{where}: fields not in {cls.__name__}: {sorted(unknown)}"
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            assert f.default is not attr.NOTHING, f"{where}: required {name} missing"
            continue
        value = _value(hints[name], data[name], f"{where}.{name}")
        if f.init:
            kwargs[f.alias] = value
        else:
            assert value == cls._get_schema(), f"{where}.{name}: {value!r}"
    return cls(**kwargs)


def validate(line: dict) -> RunEvent:
    event = _structure(RunEvent, line, "event")
    assert event.eventType is not None and event.eventType.value == "COMPLETE"
    assert uuid.UUID(event.run.runId)
    assert datetime.fromisoformat(event.eventTime).tzinfo is not None, "eventTime without a zone"
    assert event.producer.startswith("https://")
    return event


def export_all(instance, path, **options) -> tuple[int, list[dict]]:
    emitter = OpenLineageEmitter(file=str(path), **options)
    cursor = 0
    while True:  # pages of 7: the per-key merge must neither skip nor repeat across pages
        new = export_new_materializations(instance, emitter, cursor, limit=7)
        if new == cursor:
            break
        cursor = new
    emitter.close()
    return cursor, read_events(str(path))


def _edges(event: dict) -> set[tuple[str, str | None]]:
    return {(i["name"], i.get("facets", {}).get("version", {}).get("datasetVersion")) for i in event["inputs"]}


def _output_version(event: dict) -> str:
    [out] = event["outputs"]
    return out["facets"]["version"]["datasetVersion"]


def _materializations(instance) -> int:
    return sum(len(instance.fetch_materializations(key, limit=10_000).records) for key in instance.get_asset_keys())


def test_events_are_valid_and_their_edges_are_the_catalogs(trained, curated, tmp_path):
    instance, cat = curated["instance"], curated["cat"]
    cursor, events = export_all(instance, tmp_path / "events.jsonl")
    assert len(events) == _materializations(instance) > 0
    for line in events:
        validate(line)
    by_asset: dict[str, list[dict]] = {}
    for e in events:
        by_asset.setdefault(e["job"]["name"], []).append(e)
        assert e["outputs"][0]["name"] == e["job"]["name"] and e["job"]["namespace"] == "svd-dag"
        facet = e["run"]["facets"]["svd_dag"]
        assert e["run"]["runId"] == run_id_for(facet["dagsterRunId"], e["job"]["name"])
    assert {"raw_videos", "clips", "annotations", "lvd_f", "lvd_f_eval", "clip_shards", "hq_finetune_set",
            *STAGES} <= set(by_asset)

    # lvd_f: its output version is the current dataset version, its facts in the facet
    current = cat.rows("SELECT d.* FROM dataset_versions d JOIN (SELECT DISTINCT dataset_version FROM lvd_f) "
                       "USING (dataset_version) WHERE d.asset = 'lvd_f'")[0]
    # The same content may have been materialized more than once (a rerun reuses its version): the latest.
    *_, lvd_f = [e for e in by_asset["lvd_f"] if _output_version(e) == current["dataset_version"]]
    facts = lvd_f["outputs"][0]["facets"]["svd_dag"]["metadata"]
    assert facts["dataset_version"] == current["dataset_version"] and facts["kept"] == current["kept"]
    assert facts["manifest_uri"] == current["manifest_uri"] and facts["catalog_table"].endswith("::lvd_f")
    assert set(facts["removed_by_criterion"]) == {"motion", "aesthetics", "caption_similarity", "text"}
    assert "histograms" in lvd_f["outputs"][0]["facets"]["svd_dag"]["omitted"]  # an inline PNG
    assert lvd_f["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == current["kept"]
    assert ("annotations", None) not in _edges(lvd_f) and "annotations" in {n for n, _ in _edges(lvd_f)}

    # every stage checkpoint row: the event that produced that version has the row's edges
    rows = cat.rows(f"SELECT * FROM checkpoints WHERE asset IN ({', '.join('?' * len(STAGES))}) "
                    "AND coalesce(variant, '') = ''", STAGES)
    assert {r["asset"] for r in rows} == set(STAGES)
    for row in rows:
        *_, event = [e for e in by_asset[row["asset"]] if _output_version(e) == row["data_version"]]
        edges = _edges(event)
        assert (row["dataset_asset"], row["dataset_version"]) in edges, (row["asset"], edges)
        if row["parent_asset"]:
            assert (row["parent_asset"], row["parent_data_version"]) in edges, (row["asset"], edges)
        facts = event["outputs"][0]["facets"]["svd_dag"]["metadata"]
        assert facts["checkpoint_uri"] == row["checkpoint_uri"] and facts["dataset_version"] == row["dataset_version"]
        assert event["run"]["facets"]["svd_dag"]["dagsterRunId"] == row["dagster_run_id"]

    # deterministic: the same ids again from cursor 0, and nothing new after the cursor
    again_cursor, again = export_all(instance, tmp_path / "again.jsonl")
    assert again_cursor == cursor
    assert [e["run"]["runId"] for e in again] == [e["run"]["runId"] for e in events]
    assert len({e["run"]["runId"] for e in events}) == len(events)
    emitter = OpenLineageEmitter(file=str(tmp_path / "more.jsonl"))
    assert export_new_materializations(instance, emitter, cursor) == cursor and emitter.emitted == 0


class _Recorder(BaseHTTPRequestHandler):
    """Records POST bodies and Authorization headers; answers 400 once `fail_after` are in."""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        if server.fail_after is not None and len(server.bodies) >= server.fail_after:
            self.send_response(400)
        else:
            server.bodies.append(json.loads(body))
            server.auth.append(self.headers.get("Authorization"))
            server.paths.append(self.path)
            self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def lineage_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.bodies, server.auth, server.paths, server.fail_after = [], [], [], None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_sensor_posts_to_an_http_endpoint_and_resumes_after_a_failure(curated, tmp_path, lineage_server,
                                                                          monkeypatch):
    """Configured by environment as in production (URL, key through dg.EnvVar); the endpoint
    refuses from the 3rd event on: the sensor keeps what went out, and the next tick sends
    the rest, each event once to the endpoint and once to the file."""
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings

    instance = curated["instance"]
    url = f"http://127.0.0.1:{lineage_server.server_address[1]}"
    monkeypatch.setenv("SVD_DAG_OPENLINEAGE_API_KEY", "s3cret")
    file = tmp_path / "home" / "openlineage" / "events.jsonl"
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_OPENLINEAGE_URL": url,
                              "SVD_DAG_OPENLINEAGE_API_KEY": "s3cret", "SVD_DAG_OPENLINEAGE_NAMESPACE": "svd-test"})
    assert settings.openlineage_file == str(file) and "s3cret" not in repr(settings)
    resource = build_defs(settings).resources["openlineage"]
    assert isinstance(resource, OpenLineageResource) and isinstance(resource.api_key, dg.EnvVar)

    lineage_server.fail_after = 2
    with dg.build_sensor_context(instance=instance, resources={"openlineage": resource}) as failing:
        first = openlineage_export_sensor(failing)
    assert isinstance(first, dg.SkipReason) and "failed at event-log storage id" in first.skip_message
    assert "400 Client Error" in first.skip_message, first.skip_message
    assert len(lineage_server.bodies) == 2 and len(read_events(str(file))) == 2
    assert failing.cursor == nth_storage_id(instance, 2)

    lineage_server.fail_after = None
    with dg.build_sensor_context(instance=instance, cursor=failing.cursor,
                                 resources={"openlineage": resource}) as context:
        second = openlineage_export_sensor(context)
    assert isinstance(second, dg.SkipReason) and "sent" in second.skip_message
    total = _materializations(instance)
    posted, written = lineage_server.bodies, read_events(str(file))
    assert len(posted) == len(written) == total
    assert [e["run"]["runId"] for e in posted] == [e["run"]["runId"] for e in written]
    assert len({e["run"]["runId"] for e in posted}) == total
    assert set(lineage_server.auth) == {"Bearer s3cret"} and set(lineage_server.paths) == {"/api/v1/lineage"}
    assert {e["job"]["namespace"] for e in posted} == {"svd-test"}
    for body in posted:
        validate(body)
    with dg.build_sensor_context(instance=instance, cursor=context.cursor, resources={"openlineage": resource}) as done:
        third = openlineage_export_sensor(done)
    assert "sent 0 " in third.skip_message and len(lineage_server.bodies) == total


def nth_storage_id(instance, n: int) -> str:
    """The storage id of the `n`-th materialization: the cursor a tick that sent `n` keeps."""
    ids = sorted(r.storage_id for key in instance.get_asset_keys()
                 for r in instance.fetch_materializations(key, limit=10_000).records)
    return str(ids[n - 1])


def test_the_schema_check_rejects_what_the_schema_rejects():
    """The check above is only as good as what it refuses: each corruption must fail it."""
    import copy

    from svd_dag.lineage.openlineage import MaterializationRecord, build_run_event, to_json

    record = MaterializationRecord(asset="lvd_f", dagster_run_id=str(uuid.uuid4()), timestamp=1.7e9, data_version="v1",
                                   input_versions={"annotations": "a1"}, metadata={"dagster/row_count": 3, "x": [1]},
                                   job_name="recuration", storage_id=9)
    good = json.loads(to_json(build_run_event(record)))
    validate(good)

    def broken(change):
        line = copy.deepcopy(good)
        change(line)
        with pytest.raises((AssertionError, ValueError, TypeError)):
            validate(line)

    broken(lambda e: e["job"].pop("name"))
    broken(lambda e: e.update(eventType="DONE"))
    broken(lambda e: e["run"].update(runId="not-a-uuid"))
    broken(lambda e: e.update(eventTime="2024-01-01"))
    broken(lambda e: e.update(eventTime="2024-01-01T00:00:00"))  # no zone
    broken(lambda e: e.update(extra=1))
    broken(lambda e: e["outputs"][0]["facets"]["version"].pop("datasetVersion"))
    broken(lambda e: e["outputs"][0]["facets"]["version"].pop("_producer"))
    broken(lambda e: e["outputs"][0]["facets"]["svd_dag"].update(_schemaURL="https://example.com/other"))
    broken(lambda e: e["outputs"][0]["facets"].update(made_up={"_producer": "https://x", "_schemaURL": "https://y"}))
    broken(lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].update(rowCount="3"))
    broken(lambda e: e["inputs"][0].update(name=7))
