"""The peers of the comparison, one module each, imported lazily.

``PEERS`` maps a method name to ``(module, function, packages it needs)``; :func:`missing` says
why a peer cannot run here (a package that is not installed or fails to import), so
``compare.py`` skips it with a clear line instead of crashing.
"""

from __future__ import annotations

import importlib

PEERS = {
    "deap": ("peers.deap_ga", "run", ("deap",)),
    "evotorch-ga": ("peers.evotorch_peers", "run_ga", ("evotorch",)),
    "evotorch-pgpe": ("peers.evotorch_peers", "run_pgpe", ("evotorch",)),
    "evotorch-snes": ("peers.evotorch_peers", "run_snes", ("evotorch",)),
    "pycma-sepcma": ("peers.pycma_sep", "run", ("cma",)),
}


def missing(name: str) -> str | None:
    """None if the peer can run; else why not (e.g. ``evotorch is not installed``)."""
    _module, _function, packages = PEERS[name]
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as err:
            return f"{package} is not importable ({err})"
    return None


def runner(name: str):
    """The peer's ``run(setup) -> dict`` function."""
    module, function, _packages = PEERS[name]
    return getattr(importlib.import_module(module), function)
