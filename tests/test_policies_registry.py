"""Policy configs, the registry, the static bundle, and the no-SimPy rule for policies."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from chironsim.config_base import StrictModel
from chironsim.errors import UnknownNameError
from chironsim.policies import registry
from chironsim.contract.protocols import Autoscaler, Router
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.reactive import ReactiveAutoscaler, ReactivePolicyConfig
from chironsim.policies.registry import (
    PolicyConfig,
    build_policy,
    known_policies,
    parse_policy_config,
    register_policy,
)
from chironsim.policies.routers import LeastOutstandingRouter, RoundRobinRouter
from chironsim.policies.static import StaticPolicyConfig

POLICY_DIR = Path(__file__).resolve().parents[1] / "chironsim" / "policies"
ADAPTER = TypeAdapter(PolicyConfig)


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_static_bundle_has_the_router_and_no_autoscaler():
    bundle = build_policy(StaticPolicyConfig(), rng())
    assert isinstance(bundle, PolicyBundle)
    assert isinstance(bundle.router, LeastOutstandingRouter)
    assert bundle.autoscalers == [] and bundle.name == "static"
    chosen = build_policy(StaticPolicyConfig(router={"kind": "round_robin"}), rng())
    assert isinstance(chosen.router, RoundRobinRouter)


def test_reactive_bundle_has_one_autoscaler_at_the_configured_interval():
    bundle = build_policy(ReactivePolicyConfig(target=0.7, interval_s=5.0), rng())
    assert bundle.name == "reactive"
    assert isinstance(bundle.router, Router)
    [scaler] = bundle.autoscalers
    assert isinstance(scaler, ReactiveAutoscaler) and isinstance(scaler, Autoscaler)
    assert scaler.interval == 5.0


def test_each_build_gives_fresh_stateful_objects():
    cfg = StaticPolicyConfig(router={"kind": "round_robin"})
    assert build_policy(cfg, rng()).router is not build_policy(cfg, rng()).router


def test_the_union_discriminates_on_kind():
    static = ADAPTER.validate_python({"kind": "static", "router": {"kind": "kv_aware"}})
    assert isinstance(static, StaticPolicyConfig) and static.router.kind == "kv_aware"
    reactive = ADAPTER.validate_python({"kind": "reactive", "target": 0.7, "pools": ["a"]})
    assert isinstance(reactive, ReactivePolicyConfig) and reactive.pools == ("a",)
    with pytest.raises(ValidationError, match="chiron-ish"):
        ADAPTER.validate_python({"kind": "chiron-ish"})
    with pytest.raises(ValidationError, match="target"):
        ADAPTER.validate_python({"kind": "reactive", "target": -1})
    with pytest.raises(ValidationError, match="autoscaler"):
        ADAPTER.validate_python({"kind": "static", "autoscaler": "hpa"})


def test_parse_policy_config_dispatches_through_the_registry():
    cfg = parse_policy_config({"kind": "reactive", "target": 2, "metric": "queue_length"})
    assert cfg == ReactivePolicyConfig(target=2.0, metric="queue_length")
    with pytest.raises(UnknownNameError, match="unknown policy 'statc'.*did you mean static"):
        parse_policy_config({"kind": "statc"})
    with pytest.raises(UnknownNameError, match="unknown policy"):
        parse_policy_config({"target": 1})


class _ShadowConfig(StrictModel):
    kind: str = "shadow"


def test_build_policy_rejects_an_unregistered_kind():
    with pytest.raises(UnknownNameError) as err:
        build_policy(_ShadowConfig(), rng())
    assert err.value.kind == "policy" and err.value.name == "shadow"
    assert "static" in str(err.value) and "reactive" in str(err.value)


def test_register_policy_plugs_in_a_new_kind(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def build_shadow(cfg, generator):
        return PolicyBundle(router=RoundRobinRouter(), autoscalers=[], name=cfg.kind)

    register_policy("shadow", _ShadowConfig, build_shadow)
    register_policy("shadow", _ShadowConfig, build_shadow)  # same registration: harmless
    assert "shadow" in known_policies()
    assert build_policy(_ShadowConfig(), rng()).name == "shadow"
    assert isinstance(parse_policy_config({"kind": "shadow"}), _ShadowConfig)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("shadow", StaticPolicyConfig, build_shadow)
    with pytest.raises(TypeError, match="expects a StaticPolicyConfig"):
        build_policy(_ShadowConfig(kind="static"), rng())


def test_builtin_policies_are_registered():
    assert {"static", "reactive"} <= set(known_policies())


def _simpy_imports(path: Path) -> list[str]:
    """Every module a file imports (at any depth, including inside functions) from simpy."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return sorted(name for name in names if name.split(".")[0] == "simpy")


def test_import_scanner_sees_nested_and_aliased_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import numpy as np\nimport simpy as sp\n"
        "def f():\n    import simpy.resources\n    from simpy import Environment\n"
    )
    assert _simpy_imports(sample) == ["simpy", "simpy", "simpy.resources"]


def test_no_policy_module_imports_simpy():
    modules = sorted(POLICY_DIR.rglob("*.py"))
    assert {p.name for p in modules} >= {"routers.py", "reactive.py", "registry.py"}
    offenders = {path.name: _simpy_imports(path) for path in modules}
    assert {name: found for name, found in offenders.items() if found} == {}
