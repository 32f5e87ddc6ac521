"""Policies come from the ``vectorfit_freezing_policies`` hook: vf-avf's built-ins, a throwaway plugin, and the
example package under examples/, installed with pip and selected by name with no change to vf-avf."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from vf_core import PluginError, PolicyNotFoundError
from vf_core.plugins import get_plugin_manager, hookimpl, reset_plugin_manager
from vf_avf import AVFConfig, Decision, FreezingPolicy, PolicyRecord, VectorFreezer, list_policies
from vf_avf.policies import BUILTIN_POLICIES

from avf_helpers import constant_registry, set_strengths

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "vf-policy-example"
BUILTINS = {"topk_ema", "random", "dropout", "none"}


def test_builtins_come_through_the_hook_of_the_vf_avf_entry_point(fresh_plugins):
    import vf_avf.plugin

    pm = get_plugin_manager()
    assert pm.get_plugin("vf_avf") is vf_avf.plugin  # loaded from the 'vectorfit' entry-point group
    impls = {pm.get_name(impl.plugin) for impl in pm.hook.vectorfit_freezing_policies.get_hookimpls()}
    assert "vf_avf" in impls
    assert BUILTINS <= set(list_policies())
    assert all(list_policies()[r.name] is r for r in BUILTIN_POLICIES)


def test_blocking_the_vf_avf_plugin_removes_the_builtins(fresh_plugins, monkeypatch):
    monkeypatch.setenv("VECTORFIT_DISABLE_PLUGINS", "vf_avf")
    reset_plugin_manager()
    assert not BUILTINS & set(list_policies())
    with pytest.raises(PolicyNotFoundError, match="'topk_ema'"):
        AVFConfig()


class EveryOtherConfig(AVFConfig):
    policy: Literal["every_other"] = "every_other"


class EveryOther(FreezingPolicy):
    """Freezes the vectors at even positions on even steps."""

    def decide(self, step, vectors, frozen):
        return Decision(frozenset(self.names[::2]) if step % 2 == 0 else frozenset(), record=False)


class ThrowawayPlugin:
    @hookimpl
    def vectorfit_freezing_policies(self):
        return [PolicyRecord("every_other", EveryOtherConfig, EveryOther)]


def _registered(plugin, name):
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    return pm


def test_a_registered_plugin_policy_is_selected_by_name(fresh_plugins):
    pm = _registered(ThrowawayPlugin(), "throwaway")
    try:
        config = AVFConfig.model_validate({"policy": "every_other"})
        assert type(config) is EveryOtherConfig
        freezer = VectorFreezer(constant_registry("abcd"), config)
        assert [sorted(freezer.step(s)) for s in range(3)] == [["a", "c"], [], ["a", "c"]]
    finally:
        pm.unregister(name="throwaway")


def test_duplicate_policy_names_name_both_providers(fresh_plugins):
    class Clash:
        @hookimpl
        def vectorfit_freezing_policies(self):
            return [BUILTIN_POLICIES[0]]

    pm = _registered(Clash(), "clash")
    try:
        with pytest.raises(PluginError, match="'topk_ema' is provided by both") as info:
            list_policies()
        assert "'vf_avf'" in str(info.value) and "'clash'" in str(info.value)
    finally:
        pm.unregister(name="clash")


def test_records_are_checked():
    with pytest.raises(PluginError, match="must default to 'other'"):
        PolicyRecord("other", EveryOtherConfig, EveryOther)
    with pytest.raises(PluginError, match="subclass vf_avf.AVFConfig"):
        PolicyRecord("every_other", dict, EveryOther)


def _register_dist_by_hand(target: Path) -> None:
    """Without pip: the source on sys.path plus a dist-info declaring the package's entry point."""
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = target / f"vf_policy_example-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = project["entry-points"]["vectorfit"]
    (info / "entry_points.txt").write_text("[vectorfit]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    sys.path.insert(0, str(EXAMPLE / "src"))


@pytest.fixture
def example_installed(tmp_path, fresh_plugins):
    """pip-install examples/vf-policy-example into a folder put on sys.path (the venv stays untouched)."""
    target = tmp_path / "site"
    extra_paths = list(sys.path)
    if importlib.util.find_spec("pip") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-input", "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
                       check=True, capture_output=True, text=True, timeout=300)
    else:  # pragma: no cover - environments without pip (uv)
        _register_dist_by_hand(target)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    reset_plugin_manager()
    try:
        yield target
    finally:
        sys.path[:] = [p for p in sys.path if p in extra_paths]
        for module in [m for m in sys.modules if m == "vf_policy_example" or m.startswith("vf_policy_example.")]:
            del sys.modules[module]
        importlib.invalidate_caches()
        reset_plugin_manager()


def test_the_example_package_is_selected_by_name_once_installed(example_installed):
    assert "least_trained" in list_policies()
    assert get_plugin_manager().get_plugin("vf_policy_example") is not None  # through its entry point
    config = AVFConfig(policy="least_trained", t_i=1, t_f=2, n_f=2, k=2, kinds=["bias"])
    assert type(config).__module__ == "vf_policy_example.policy"
    registry = constant_registry("abcd")
    freezer = VectorFreezer(registry, config)
    set_strengths(registry, {"a": 3.0, "b": 0.5, "c": 1.0, "d": 2.0})
    for step in range(4):
        freezer.step(step)
    assert [(r.step, r.frozen) for r in freezer.history] == [(1, ("b", "c")), (3, ("b", "c"))]
    with pytest.raises(Exception, match="kinds"):
        AVFConfig(policy="least_trained", kinds=["weights"])


def test_the_example_policy_is_unknown_until_installed(fresh_plugins):
    if importlib.util.find_spec("vf_policy_example") is not None:
        pytest.skip("vf-policy-example is installed in this environment")
    with pytest.raises(PolicyNotFoundError, match="least_trained.*installed: .*topk_ema"):
        AVFConfig(policy="least_trained")


def test_the_docs_page_shows_the_example_package_verbatim():
    page = (REPO / "docs" / "freezing-policies.md").read_text()
    for relative in ("pyproject.toml", "src/vf_policy_example/policy.py", "src/vf_policy_example/plugin.py"):
        source = (EXAMPLE / relative).read_text().strip()
        assert source in page, f"docs/freezing-policies.md must quote examples/vf-policy-example/{relative}"

