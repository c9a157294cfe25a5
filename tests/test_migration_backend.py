"""Migration backends (cluster.migration.backend): Gloo at a configured bandwidth, as before,
or NCCL at the GPU's measured send/recv curve (chironsim/perf/transfer.py KVCopy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chironsim.catalog import get_gpu, get_model
from chironsim.contract.actions import Migrate
from chironsim.errors import ConfigError
from chironsim.perf.efficiency import comm_for_gpu
from chironsim.perf.memory import kv_block_bytes
from chironsim.perf.transfer import KVCopy
from chironsim.sim.cluster import PoolSpec
from chironsim.sim.config import ClusterConfig, MigrationConfig, PoolConfig
from chironsim.workload.spec import RequestSpec
from tests.test_migration import detail, events, simulate


def _spec(**migration) -> PoolSpec:
    cluster = ClusterConfig(model="llama-3-8b", gpu="h100-sxm", migration=MigrationConfig(**migration))
    return PoolSpec.resolve("default", PoolConfig(tp=2), cluster)


def test_gloo_default_prices_blocks_at_the_configured_bandwidth_as_before():
    spec = _spec()
    block = kv_block_bytes(get_model("llama-3-8b"), 16, 2)
    per_block = block / 2 / (4.5 * 1e9)  # the expression the simulator used before backends
    assert spec.migration_copy.seconds(1) == per_block
    assert spec.migration_copy.seconds(37) == 37 * per_block
    assert MigrationConfig().stage_alpha_s == 0.006


def test_nccl_prices_each_gpus_shard_with_the_measured_send_recv_curve():
    spec = _spec(backend="nccl")
    block = kv_block_bytes(get_model("llama-3-8b"), 16, 2)
    network = comm_for_gpu(get_gpu("h100-sxm"), retarget=False)
    for blocks in (1, 8, 64, 512):
        assert spec.migration_copy.seconds(blocks) == network.send_recv(blocks * block / 2, same_node=False)
    assert spec.migration_copy.seconds(0) == 0.0
    times = [spec.migration_copy.seconds(b) for b in range(0, 200)]
    assert all(b >= a for a, b in zip(times, times[1:]))  # more blocks never copy faster
    assert MigrationConfig(backend="nccl").stage_alpha_s == 0.0014
    assert MigrationConfig(backend="nccl", alpha_s=0.003).stage_alpha_s == 0.003


def test_nccl_within_a_node_is_faster_than_across_nodes_and_than_gloo():
    network, nvlink, gloo = (_spec(backend="nccl"), _spec(backend="nccl", nccl_path="nvlink"), _spec())
    for blocks in (4, 64):
        assert nvlink.migration_copy.seconds(blocks) < network.migration_copy.seconds(blocks)
        assert network.migration_copy.seconds(blocks) < gloo.migration_copy.seconds(blocks)


def test_network_curves_are_not_rescaled_by_a_gpus_nvlink():
    """An A10 has no NVLink; its copies between nodes use the reference GPU's network curve as
    measured, while its intra-node curve is re-targeted to its own link."""
    a10, a100 = get_gpu("a10"), get_gpu("a100-80gb")
    size = 64 * 2**20
    assert (comm_for_gpu(a10, retarget=False).send_recv(size, same_node=False)
            == comm_for_gpu(a100, retarget=False).send_recv(size, same_node=False))
    assert comm_for_gpu(a10).send_recv(size, same_node=True) > comm_for_gpu(a100).send_recv(size, same_node=True)


def test_a_migration_stage_costs_alpha_plus_the_curve():
    spec = RequestSpec(0.0, 4000, 300)
    sim = simulate([spec], [(2.0, Migrate("default-0", "default-1", reason="test"))],
                   migration={"backend": "nccl"})
    stages = events(sim, "migrate_stage")
    assert stages and events(sim, "migrate_done")
    block = kv_block_bytes(get_model("llama-3-8b"), 16, 1)
    network = comm_for_gpu(get_gpu("a10"), retarget=False)
    for stage in stages:
        info = detail(stage)
        expected = 0.0014 + network.send_recv(int(info["blocks"]) * block, same_node=False)
        assert float(info["seconds"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("migration", "message"), [
    ({"backend": "nccl", "bandwidth_gbps": 10}, "bandwidth_gbps is the gloo backend's"),
    ({"nccl_path": "nvlink"}, "nccl_path applies to backend nccl only"),
    ({"backend": "rdma"}, "backend"),
])
def test_inconsistent_backend_settings_are_config_errors(migration, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        MigrationConfig(**migration)


def test_the_cli_names_the_key_and_exits_2(tmp_path: Path):
    config = tmp_path / "s.yaml"
    config.write_text("name: s\nduration_s: 10\ncluster:\n  migration:\n    backend: nccl\n"
                      "    bandwidth_gbps: 10\n")
    done = subprocess.run([sys.executable, "-m", "chironsim.cli", "run", str(config), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cluster.migration" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_resolved_config_with_every_default_reads_back():
    for settings in (MigrationConfig(), MigrationConfig(backend="nccl", nccl_path="nvlink")):
        dumped = settings.model_dump(mode="json")
        assert MigrationConfig(**dumped) == settings


def test_kv_copy_needs_exactly_one_way_to_travel():
    with pytest.raises(ConfigError):
        KVCopy(1e6, 1)
    with pytest.raises(ConfigError):
        KVCopy(1e6, 1, bandwidth=1e9, comm=comm_for_gpu(get_gpu("h100-sxm")))
