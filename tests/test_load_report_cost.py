"""Polls stay exact while they got cheaper: ``Instance.load_report`` hands out its previous
report again when every field is unchanged, and ``kv_used_at`` computes the KV in use inside
a stretch in one call. Both are compared, at every poll of runs that migrate and fuse, with
the formulas they replaced (the frozen view's KV figure, a report built afresh)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chironsim.contract.load import LoadReport
from chironsim.sim.instance import Instance
from scenarios import build_simulation

REGRESSION = Path(__file__).resolve().parents[1] / "configs" / "regression"


def fresh_report(inst: Instance, now: float, out: int, into: int) -> LoadReport:
    """The report as built before reuse, field by field from the instance."""
    head = inst.waiting[0][1] if inst.waiting else None
    decoding = len(inst.decodes)
    return LoadReport(
        inst.instance_id, inst.pool, inst.state, inst.kv.capacity,
        inst.kv.capacity - inst.view(now).kv_used_blocks, inst.kv.watermark,
        decoding + len(inst.prefilling) + len(inst.arriving) + len(inst.paused),
        len(inst.waiting) + len(inst.swapped),
        float(inst.pending_blocks),
        head.prefill_target / inst.block_size if head is not None else 0.0,
        len(inst.swapped) + inst.preempted_waiting,
        out, into,
        movable=max(0, decoding - out),
        running_priorities=tuple(inst.running_by_priority),
        group=inst.group,
    )


@pytest.mark.parametrize("name", ["llumnix_bursty", "kunserve_burst"])
def test_every_polled_report_equals_one_built_afresh(name):
    config = yaml.safe_load((REGRESSION / f"{name}.yaml").read_text())["scenario"]
    sim = build_simulation(config)
    cluster = sim.cluster
    polls = reused = mid_stretch = 0
    previous: dict[str, LoadReport] = {}

    def checked_load_view():
        nonlocal polls, reused, mid_stretch
        view = poll()
        now = cluster.env.now
        out, into = cluster.migrations.out_count, cluster.migrations.in_count
        for pool in view.pools.values():
            for report in pool.load:
                inst = cluster.instance(report.instance_id)
                expected = fresh_report(inst, now, out.get(inst.instance_id, 0),
                                        into.get(inst.instance_id, 0))
                assert report == expected, (now, report, expected)
                reused += report is previous.get(report.instance_id)
                mid_stretch += inst._stretch is not None
                previous[report.instance_id] = report
                polls += 1
        return view

    poll = cluster.load_view
    cluster.load_view = checked_load_view
    sim.run()
    assert polls > 100 and 0 < reused < polls and mid_stretch > 0
