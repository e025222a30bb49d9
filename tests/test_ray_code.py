"""Which modules travel to Ray workers by value, and that they really do (no Ray started)."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch

import hybridopt.tasks.trading

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402

from hybridopt.backends.ray_code import is_local_module, shipped_by_value  # noqa: E402

MODULES = {
    "hxcode_layer": """
        from torch import nn

        class Doubler(nn.Module):
            def forward(self, x):
                return 2 * x
    """,
    "hxcode_model": """
        from torch import nn
        from hxcode_layer import Doubler
        import hxcode_helper

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.doubler = Doubler()
                self.linear = nn.Linear(3, 2)

            def forward(self, x):
                return self.linear(self.doubler(x))

        def score(actions, data):
            return hxcode_helper.mean(actions)
    """,
    "hxcode_helper": """
        def mean(x):
            return float(sum(x) / len(x))
    """,
}


@pytest.fixture
def user_modules(tmp_path):
    """The modules above, importable here only through a temp dir on sys.path."""
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("hxcode_model"), tmp_path
    finally:
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
        for name in MODULES:
            sys.modules.pop(name, None)


def test_installed_code_stays_by_reference(tmp_path, monkeypatch):
    assert not is_local_module(json)  # the standard library
    assert not is_local_module(torch.nn.modules.linear)
    assert not is_local_module(hybridopt.tasks.trading)  # hybridopt, even installed editable
    assert not is_local_module(sys.modules["__main__"])  # cloudpickle ships it by value anyway
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "hxcode_installed.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        assert not is_local_module(importlib.import_module("hxcode_installed"))
    finally:
        sys.modules.pop("hxcode_installed", None)


def test_every_module_the_objects_use_is_found(user_modules):
    model_module, _ = user_modules
    assert is_local_module(model_module)
    before = cloudpickle.list_registry_pickle_by_value()
    with shipped_by_value(model_module.Net(), model_module.score) as names:
        assert set(names) == set(MODULES)  # the submodule's class and the helper's module too
        assert set(MODULES) <= cloudpickle.list_registry_pickle_by_value()
    assert cloudpickle.list_registry_pickle_by_value() == before  # left as found
    with shipped_by_value(model_module.Net(), enabled=False) as names:
        assert names == []
    with shipped_by_value(torch.nn.Linear(2, 2), hybridopt.tasks.trading.trading_score) as names:
        assert names == []


def test_shipped_objects_load_where_the_modules_are_missing(user_modules):
    model_module, folder = user_modules
    model = model_module.Net()
    x = torch.randn(4, 3)
    with shipped_by_value(model, model_module.score):
        payload = cloudpickle.dumps((model, model_module.score))
    # As on a worker: the modules are neither imported nor importable
    sys.path.remove(str(folder))
    for name in MODULES:
        sys.modules.pop(name)
    loaded, score = cloudpickle.loads(payload)
    assert torch.equal(loaded(x), model(x))
    assert score([1, 2, 3], None) == 2.0
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hxcode_model")


def test_a_module_the_user_registered_stays_registered(user_modules):
    model_module, _ = user_modules
    helper = sys.modules["hxcode_helper"]
    cloudpickle.register_pickle_by_value(helper)
    try:
        with shipped_by_value(model_module.Net(), model_module.score) as names:
            assert "hxcode_helper" not in names
        assert "hxcode_helper" in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(helper)
