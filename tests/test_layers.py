"""The layering rules of DESIGN §1-2, checked on the import graph."""

from __future__ import annotations

import pkgutil

import chironsim.contract
import chironsim.sim
from chironsim.testing import forbidden_imports, simpy_imports


def _modules(package) -> list[str]:
    prefix = package.__name__ + "."
    return [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, prefix)]


def test_sim_imports_nothing_from_policies():
    """The simulator knows policies only through the contract below both."""
    assert forbidden_imports(_modules(chironsim.sim), "chironsim.policies") == {}


def test_contract_imports_neither_sim_nor_policies_nor_simpy():
    modules = _modules(chironsim.contract)
    assert forbidden_imports(modules, "chironsim.sim") == {}
    assert forbidden_imports(modules, "chironsim.policies") == {}
    assert simpy_imports(modules) == {}


def test_the_check_sees_a_real_import():
    assert "chironsim.experiments.runner" in forbidden_imports(
        ["chironsim.experiments.runner"], "chironsim.policies")
