"""L1, the Llumnix migration micro-benchmark (experiments/llumnix/l1.py), at its shortest and
longest case: the shape of the paper's Fig. 10 as chironsim produces it.

Live migration: two stages at 1k and at 8k, and a downtime that does not grow with the sequence:
it is α + (blocks of the final stage) × (seconds per block), and the final stage holds the blocks
written while stage 0 copied, 2 at 1k and 3 at 8k (at most ``last_stage_max_blocks``). So the
two downtimes differ by at most one block's copy time (1.86 ms for an 8 MiB LLaMA-7B block at
4.5 GB/s, 19 % of the 1k downtime; the 10 % of issue 9 holds for 2 MiB Llama-3-8B blocks, not
for LLaMA-7B's, see REPORT.md). Blocking copy and recompute stop the request for the whole
copy or prefill: their downtime grows with the sequence, at least 7x from 1k to 8k.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llumnix_l1", ROOT / "experiments/llumnix/l1.py")
l1 = sys.modules.setdefault("llumnix_l1", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(l1)

SHORT, LONG = min(l1.LENGTHS), max(l1.LENGTHS)


@pytest.fixture(scope="module")
def rows():
    return {(tokens, mode): l1.run_case(l1.Case("llama-7b", tokens, mode))
            for tokens in (SHORT, LONG) for mode in l1.MODES}


def test_every_migration_completes_and_the_request_finishes(rows):
    for row in rows.values():
        assert row["status"] == "finished" and row["migrations"] == 1, row
    assert rows[LONG, "live"]["context_override"] and not rows[SHORT, "live"]["context_override"]


def test_live_downtime_is_flat_in_the_sequence_length(rows):
    short, long = rows[SHORT, "live"], rows[LONG, "live"]
    assert short["stages"] == long["stages"] == 2
    for row in (short, long):
        expected = row["alpha_ms"] + row["final_stage_blocks"] * row["block_ms"]
        assert row["downtime_ms"] == pytest.approx(expected, rel=1e-6), row
        assert 1 <= row["final_stage_blocks"] <= 4  # last_stage_max_blocks
    assert abs(long["downtime_ms"] - short["downtime_ms"]) <= short["block_ms"] + 1e-9
    # tens of milliseconds at most, while the whole move of 8k takes about a second
    assert long["downtime_ms"] < 20 and long["total_ms"] > 50 * long["downtime_ms"]


def test_blocking_and_recompute_downtime_grow_with_the_sequence_length(rows):
    for mode in ("blocking", "recompute"):
        short, long = rows[SHORT, mode], rows[LONG, mode]
        assert long["downtime_ms"] > 7 * short["downtime_ms"], (mode, short, long)
        assert long["downtime_ms"] > 50 * rows[LONG, "live"]["downtime_ms"]
    blocking = rows[LONG, "blocking"]
    assert blocking["stages"] == 1
    assert blocking["downtime_ms"] == pytest.approx(
        blocking["alpha_ms"] + blocking["blocks_copied"] * blocking["block_ms"], rel=1e-6)


def test_the_scenario_is_deterministic_so_one_seed_is_the_measurement():
    assert l1.check_seed_independent(l1.Case("llama-7b", SHORT, "live"))


def test_the_context_override_changes_nothing_but_admission():
    # Llama-2-7B: LLaMA-7B's shapes, a 4k catalog context (no override needed at 2k).
    for mode in ("live", "blocking"):
        native = l1.run_case(l1.Case("llama-2-7b", 2048, mode))
        extended = l1.run_case(l1.Case("llama-7b", 2048, mode))
        assert not native["context_override"] and extended["context_override"]
        for key in ("downtime_ms", "total_ms", "stage_blocks", "block_ms"):
            assert native[key] == extended[key], key
