"""RequestColumns: the simulator's columnar request records give the same table and the same
records as the list of RequestRecord objects they replace (issue 12, bounded memory)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pandas as pd

from chironsim.metrics.columns import RequestColumns
from chironsim.metrics.records import RequestRecord
from chironsim.metrics.tables import _records_table, REQUESTS_SCHEMA, requests_table


def _records(n: int, seed: int = 0) -> list[RequestRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        finished = rng.random() < 0.8
        out.append(RequestRecord(
            request_id=i, request_class=rng.choice(["interactive", "batch"]),
            arrival=rng.random() * 100, prompt_tokens=rng.randint(1, 4000),
            output_tokens=rng.randint(1, 500), generated_tokens=rng.randint(0, 500),
            status="finished" if finished else rng.choice(["rejected", "unfinished"]),
            first_token_time=rng.random() * 200 if finished else math.nan,
            finish_time=rng.random() * 300 if finished else math.nan,
            ttft=rng.random(), tpot=rng.random() if finished else math.nan,
            itl_max=rng.random(), e2e=rng.random() * 10 if finished else math.nan,
            deadline=math.nan if rng.random() < 0.5 else 900,
            preemptions=rng.randint(0, 3), migrations=rng.randint(0, 2), evictions=0,
            instances=";".join(f"default-{rng.randint(0, 3)}" for _ in range(rng.randint(1, 2))),
            slo_met=finished and rng.random() < 0.9,
            queue_s=rng.random() if finished else math.nan,
        ))
    return out


def test_table_and_records_equal_the_list_they_replace():
    records = _records(500)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)  # requests finish out of order
    columns = RequestColumns()
    for rec in shuffled:
        columns.append(rec)
    assert len(columns) == 500
    columns.sort_by_id()
    expected = _records_table(sorted(shuffled, key=lambda r: r.request_id), REQUESTS_SCHEMA,
                              "requests")
    pd.testing.assert_frame_equal(requests_table(columns), expected)
    assert list(columns) == records
    # appended after sorting: read after the sorted rows, as a list would
    late = replace(records[0], request_id=999)
    columns.append(late)
    assert list(columns)[-1] == late and len(requests_table(columns)) == 501


def test_empty_and_already_sorted():
    empty = RequestColumns()
    empty.sort_by_id()
    pd.testing.assert_frame_equal(requests_table(empty), requests_table([]))
    records = _records(50, seed=3)
    columns = RequestColumns()
    for rec in records:
        columns.append(rec)
    columns.sort_by_id()
    assert list(columns) == records
    pd.testing.assert_frame_equal(requests_table(columns), requests_table(records))


def test_release_empties_the_store_and_gives_the_same_table():
    records = _records(200, seed=5)
    columns = RequestColumns()
    for rec in reversed(records):
        columns.append(rec)
    columns.sort_by_id()
    kept = requests_table(columns)
    released = columns.table(release=True)
    pd.testing.assert_frame_equal(released, kept)
    pd.testing.assert_frame_equal(released, requests_table(records))
    assert len(columns) == 0 and list(columns) == []
    columns.append(records[3])  # still usable afterwards
    assert list(columns) == [records[3]]
