"""A router may decline a request (return None); the request waits and is tried again as
soon as capacity may have appeared, instead of being stranded until the drain ceiling."""

from __future__ import annotations

from scenarios import build_simulation, light_scenario


class DeclineFirstAttempt:
    """Declines each listed request the first time it is offered, then picks the first."""

    def __init__(self, decline: set[int]) -> None:
        self.decline = set(decline)
        self.offers: dict[int, int] = {}

    def route(self, request, candidates):
        self.offers[request.request_id] = self.offers.get(request.request_id, 0) + 1
        if request.request_id in self.decline and self.offers[request.request_id] == 1:
            return None
        return candidates[0].instance_id


def _run(decline: set[int], duration_s: float = 20.0):
    sim = build_simulation(light_scenario("decline", seed=3, duration_s=duration_s))
    router = DeclineFirstAttempt(decline)
    sim.cluster.router = router
    sim.run()
    return sim, router


def test_a_declined_request_is_retried_and_served_promptly():
    sim, router = _run({5, 6, 20})
    records = {r.request_id: r for r in sim.request_records}
    assert all(r.status == "finished" for r in records.values())
    for rid in (5, 6, 20):
        assert router.offers[rid] == 2
        # Retried at the next arrival or completion: well within the 2 s TTFT SLO, not at
        # the drain ceiling (duration + 60 s).
        assert records[rid].ttft < 2.0, records[rid]
    assert sim.cluster.held == 0


def test_the_only_request_declined_on_an_idle_cluster_is_served_at_the_next_arrival():
    sim, router = _run({0})
    first = min(sim.request_records, key=lambda r: r.request_id)
    second_arrival = sorted(r.arrival for r in sim.request_records)[1]
    assert first.status == "finished"
    assert first.first_token_time < second_arrival + 1.0
