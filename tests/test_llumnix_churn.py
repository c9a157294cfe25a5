"""Migration churn: how instances with a migration in flight take part in Llumnix's pairing.

The released code (``llumnix/llm_engine_manager.py`` ``LLMEngineManager._migrate`` at
``37d8e5ea``) keeps one ``instance_migrating`` flag per instance, sets it on both ends of a
pair, ranks sources and destinations among all instances past the threshold and drops a pair
whose source or destination is flagged. chironsim used to leave busy instances out before
ranking (so the next-ranked paired up instead) and to count the limits per direction (so an
instance receiving a request could send one out in the same moment). The crafted reports below
pin each rule; the end-to-end test bounds the churn of the experiment scenario that showed it
(``experiments/llumnix/serving.py``, ShareGPT at 14 req/s, seed 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chironsim.contract.load import LoadReport
from chironsim.contract.states import DRAINING, READY
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.llumnix.pairing import MigrateRunning, MoveWaiting, pair_migrations

T = 3.0


def rep(name: str, *, free: int, running: int = 0, waiting: int = 0, out: int = 0,
        into: int = 0, movable: int | None = None, state: str = READY) -> LoadReport:
    return LoadReport(name, "default", state, 1000, free, 0, running, waiting, 0.0, 0.0, 0,
                      out, into, movable=running if movable is None else movable)


def pairs(decisions) -> list[tuple[str, str]]:
    return [(d.source, d.destination) for d in decisions if isinstance(d, MigrateRunning)]


# --- rule 1: a pair with a busy end is dropped; the next-ranked do not move up ---------------

def test_a_busy_source_drops_its_pair_instead_of_handing_its_destination_on():
    reports = [rep("s1", free=0, running=4, out=1),   # most loaded, already sending
               rep("s2", free=4, running=4),          # 1.0
               rep("d1", free=400, running=4),        # 100: freest
               rep("d2", free=80, running=4)]         # 20
    # released: (s1, d1) is dropped, (s2, d2) goes ahead
    assert pairs(pair_migrations(reports, threshold=T)) == [("s2", "d2")]
    # chironsim's earlier rule: s2 moves up and takes the freest destination
    assert pairs(pair_migrations(reports, threshold=T, busy="exclude")) == [("s2", "d1")]


def test_a_busy_destination_drops_its_pair_instead_of_passing_its_source_on():
    reports = [rep("s1", free=0, running=4), rep("s2", free=4, running=4),
               rep("d1", free=400, running=4, into=1), rep("d2", free=80, running=4)]
    assert pairs(pair_migrations(reports, threshold=T)) == [("s2", "d2")]
    assert pairs(pair_migrations(reports, threshold=T, busy="exclude")) == [("s1", "d2")]


def test_a_source_with_nothing_movable_uses_up_its_pair():
    reports = [rep("stuck", free=0, running=4, movable=0),  # prefilling only
               rep("s", free=4, running=4), rep("d", free=400, running=4)]
    assert pair_migrations(reports, threshold=T) == []
    assert pairs(pair_migrations(reports, threshold=T, busy="exclude")) == [("s", "d")]


# --- rule 2: one flag per instance, for both directions --------------------------------------

def test_an_instance_receiving_a_migration_does_not_send_one():
    # b has just reserved blocks for an incoming request and fell below the threshold
    reports = [rep("b", free=8, running=4, into=1), rep("a", free=400, running=4)]
    assert pair_migrations(reports, threshold=T) == []
    assert pairs(pair_migrations(reports, threshold=T, exclusive=False)) == [("b", "a")]


def test_an_instance_sending_a_migration_does_not_receive_one():
    # a sends one out (it was a source a poll ago) and is now above the threshold
    reports = [rep("s", free=0, running=4), rep("a", free=400, running=4, out=1)]
    assert pair_migrations(reports, threshold=T) == []
    assert pairs(pair_migrations(reports, threshold=T, exclusive=False)) == [("s", "a")]


def test_a_busy_terminating_source_still_hands_over_its_waiting_requests():
    drain = rep("drain", free=500, running=2, waiting=2, state=DRAINING, into=0, out=1)
    decisions = pair_migrations([drain, rep("d", free=400, running=1)], threshold=T)
    assert decisions == [MoveWaiting("drain", "d"), MoveWaiting("drain", "d")]
    # but not to a destination that is itself busy
    assert pair_migrations([drain, rep("d", free=400, running=1, out=1)], threshold=T) == []


def test_config_rules_default_to_the_released_code_and_reject_others():
    cfg = LlumnixPolicyConfig()
    assert (cfg.busy_pairs, cfg.exclusive_migration) == ("skip", True)
    cfg = LlumnixPolicyConfig(busy_pairs="exclude", exclusive_migration=False)
    assert (cfg.busy_pairs, cfg.exclusive_migration) == ("exclude", False)
    with pytest.raises(ValueError):
        LlumnixPolicyConfig(busy_pairs="ignore")


# --- end to end: the scenario that showed the churn ------------------------------------------

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "llumnix"


def churn(events, requests) -> dict[str, float]:
    """Migrations started per request, started per poll that started any, completed moves
    that went straight back (A→B then B→A), most moves of one request."""
    starts = events[events.kind == "migrate_start"]
    done = events[events.kind == "migrate_done"].sort_values("time")
    src = done.detail.map(lambda d: dict(kv.split("=", 1) for kv in d.split(";"))["src"])
    done = done.assign(src=src, dst=done.instance_id)
    back = 0
    for _, moves in done.groupby("request_id"):
        hops = list(zip(moves.src, moves.dst))
        back += sum(1 for a, b in zip(hops, hops[1:]) if a == (b[1], b[0]))
    per_poll = (starts.time / 0.05).round().value_counts()
    return {"per_request": len(starts) / len(requests),
            "per_poll": float(per_poll.mean()),
            "pingpong": back,
            "max_moves": int(done.groupby("request_id").size().max())}


@pytest.fixture(scope="module")
def scenario_churn():
    sys.path.insert(0, str(EXPERIMENT))
    import serving  # noqa: PLC0415

    result, _ = serving.simulate(serving.l2_scenario("sharegpt", "llumnix", 14, None, 1),
                                 probe=False)
    return churn(result.events, result.requests)


def test_the_sharegpt_scenario_migrates_at_the_released_rate(scenario_churn):
    """Measured on this scenario (seed 1). Before (busy instances excluded before ranking,
    limits per direction): 0.59 migrations started per request, 1.87 per poll that started
    any, 313 straight-back moves, one request moved 32 times. After (37d8e5ea's flags):
    0.43, 1.53, 296, 42. The bounds sit between. The straight-back moves and the most-moved
    request are not this rule's doing: they follow from which request a source gives up
    (the mechanism's 'last running' order; see the commit message), so they are guarded
    loosely here, not claimed."""
    c = scenario_churn
    assert c["per_request"] < 0.50, c
    assert c["per_poll"] < 1.70, c
    assert c["pingpong"] < 340, c
    assert c["max_moves"] < 60, c
