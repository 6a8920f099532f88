"""The rating page under a bounded burst on loopback: 12 raters x 8 votes at once, every
request sent twice (benchmarks/rating_load.py at a smaller size; correctness only, no
timing asserts): each decision answered once "stored" and once "duplicate", one vote file
per non-gold decision, vote ids unique and complete when parsed as `preference_votes`
parses them, winners in the task's a/b terms, one decision record per decision."""

from __future__ import annotations

import sys
from pathlib import Path

from rating_fixtures import server_env, video
from svd_dag.rating.server import RatingServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import rating_load  # noqa: E402


def test_a_burst_of_doubled_votes_stores_each_once_and_loses_none(tmp_path):
    env = server_env(tmp_path)
    tasks, pairs = rating_load.make_fixture(tmp_path, pairs=8, gold_every=4, video=video(4))
    raters = rating_load.issue_raters(env["SVD_DAG_RATING_URI"], 12)
    Path(env["SVD_DAG_VOTES_URI"]).mkdir(parents=True)
    with RatingServer(str(tasks), env=env, log=tmp_path / "server.log") as server:
        burst = rating_load.run_burst(server.url, raters, list(pairs), votes=8, copies=2, seed=1, timeout=60)
    counts = rating_load.check_burst(burst, pairs, env["SVD_DAG_VOTES_URI"], env["SVD_DAG_RATING_URI"])
    assert counts == {"decisions": 96, "stored": 96, "duplicates": 96, "vote_files": 72, "vote_rows": 144,
                      "records": 96}
