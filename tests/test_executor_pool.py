"""A worker process that dies takes down only its own item: real spawn pools, no mocks."""

from __future__ import annotations

from collections import Counter

from pool_items import POISON, square_or_die, square_or_die_once
from svd_dag.curation.executor import LocalProcessExecutor

ITEMS = list(range(8))
WORKERS = 2


def test_map_quarantines_only_the_item_that_kills_its_worker():
    outcomes = LocalProcessExecutor(max_workers=WORKERS).map(square_or_die, ITEMS)

    assert [o.item for o in outcomes] == ITEMS
    failed = [o for o in outcomes if not o.ok]
    assert [o.item for o in failed] == [POISON]
    assert "worker process died twice" in failed[0].error and "quarantined" in failed[0].error
    assert failed[0].attempts == 2
    assert {o.item: o.value for o in outcomes if o.ok} == {x: x * x for x in ITEMS if x != POISON}


def test_imap_yields_every_item_once_through_a_broken_pool():
    outcomes = list(LocalProcessExecutor(max_workers=WORKERS).imap(square_or_die, ITEMS))

    assert Counter(o.item for o in outcomes) == Counter(ITEMS)
    assert [o.item for o in outcomes if not o.ok] == [POISON]
    assert all(o.value == o.item * o.item for o in outcomes if o.ok)


def test_an_item_that_kills_its_worker_once_succeeds_when_rerun_alone(tmp_path):
    flaky, marker = 3, tmp_path / "died"
    items = [(x, str(marker) if x == flaky else None, str(tmp_path / f"starts-{x}")) for x in ITEMS]
    outcomes = LocalProcessExecutor(max_workers=WORKERS).map(square_or_die_once, items)

    assert all(o.item is item for o, item in zip(outcomes, items))  # the caller's objects, in order
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert [o.value for o in outcomes] == [x * x for x in ITEMS]
    assert marker.exists() and outcomes[flaky].attempts == 2
    # Rerun alone: the killer and what the workers had begun at the break, never an item still
    # queued (it runs once, in a later pool). How many had begun depends on the machine's speed.
    starts = {x: (tmp_path / f"starts-{x}").read_text().count("start") for x in ITEMS}
    assert all(starts[x] == o.attempts for x, o in zip(ITEMS, outcomes)), (starts, [o.attempts for o in outcomes])
