"""Carrying the user's code to Ray workers: modules only the driver can import go by value.

A model class or a score function is normally pickled *by reference* (module name and
attribute name) and re-imported on the worker. That fails for code the driver imports from its
own ``sys.path`` (a script's folder, a notebook's directory) but the nodes do not have. Ray
offers two ways to carry such code; this backend uses the first:

* **Pickling by value** (``ray.cloudpickle.register_pickle_by_value``): the functions and
  classes of a registered module are pickled with their code, so the worker needs no file at
  all. It works however the driver reached Ray (a local Ray, ``address=``, ``ray job submit``,
  a Ray that was already initialised, Ray Client), on every node, including nodes that join
  later, and it carries exactly the code the model and score function use.
* A ``runtime_env`` with ``py_modules`` uploads whole directories: for a single-file module
  that is the folder it sits in (a home directory, say), it has to be set when the job starts
  or per actor (where it replaces the job's own ``py_modules``), and each node then builds a
  separate worker environment. Users who need it (data files next to the code, C
  extensions) can still pass it through ``init_options={"runtime_env": ...}``.

Which modules: :func:`shipped_by_value` pickles the objects once into a null sink and records
every module whose classes or functions the pickle refers to by name; those that are "local"
are registered, and the dry run is repeated (code now pickled by value may refer to further
local modules) until nothing new turns up. The registrations last only while the objects are
put into Ray's object store, so this process's pickling is left as it was found.

A module is *local*, and shipped, unless it is installed: in the standard library or a
``site-packages`` directory, part of a package installed in editable mode (``pip install -e``),
or one of torch, numpy, ray and hybridopt, which the nodes must have anyway. Installed code is
expected to be installed on every node. Not carried: data files a module reads relative to its
``__file__``, and modules imported inside a function body only; install those on the nodes,
or use ``ray job submit --working-dir``.
"""

from __future__ import annotations

import functools
import json
import os
import site
import sys
import sysconfig
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

NEVER_BY_VALUE = frozenset({"torch", "numpy", "ray", "hybridopt"})
"""Top-level packages never shipped by value: every node has them."""
MAX_ROUNDS = 20  # dry runs before giving up on finding more local modules

__all__ = ["is_local_module", "shipped_by_value"]


@functools.lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    """The standard library's and the site-packages directories of this interpreter."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    dirs.add(site.getusersitepackages())
    return tuple(sorted(os.path.realpath(d) for d in dirs if d))


@functools.lru_cache(maxsize=1)
def _editable_roots() -> dict[str, tuple[str, ...]]:
    """Top-level import name -> project folders of the distributions installed editable."""
    from importlib import metadata

    tops = metadata.packages_distributions()
    roots: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except (OSError, ValueError):
            continue
        if not info.get("dir_info", {}).get("editable"):
            continue
        url = urlparse(info.get("url", ""))
        if url.scheme != "file":
            continue
        root = os.path.realpath(unquote(url.path))
        name = dist.metadata["Name"]
        for top, owners in tops.items():
            if name in owners:
                roots.setdefault(top, set()).add(root)
    return {top: tuple(sorted(r)) for top, r in roots.items()}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_local_module(module: types.ModuleType) -> bool:
    """True if ``module`` is the user's own code, which Ray workers may be unable to import.

    False for the standard library, built-in and compiled modules, anything under a
    ``site-packages``/``dist-packages`` directory, packages installed in editable mode, and
    torch, numpy, ray and hybridopt; True for any other module loaded from a ``.py`` file.
    """
    name = module.__name__
    top = name.partition(".")[0]
    if (name == "__main__" or top in NEVER_BY_VALUE or top in sys.stdlib_module_names
            or name in sys.builtin_module_names):
        return False
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False  # compiled, frozen or a namespace package: cannot go by value
    path = os.path.realpath(file)
    if {"site-packages", "dist-packages"} & set(Path(path).parts):
        return False
    if any(_inside(path, d) for d in _installed_dirs()):
        return False
    return not any(_inside(path, root) for root in _editable_roots().get(top, ()))


class _NullSink:
    """A file that keeps nothing: the dry run only wants to know what gets pickled."""

    def write(self, data: Any) -> int:
        return len(data)


def _referenced_modules(objects: tuple) -> set[str]:
    """Names of the modules whose classes, functions or selves pickling ``objects`` names."""
    import torch
    from ray import cloudpickle

    found: set[str] = set()

    class Recorder(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):  # its class counts, its values need not be copied
                found.add(type(obj).__module__)
                return tuple, ()
            if isinstance(obj, types.ModuleType):
                found.add(obj.__name__)
            else:
                module = getattr(obj, "__module__", None) if isinstance(
                    obj, (type, types.FunctionType, types.BuiltinFunctionType)) else None
                if isinstance(module, str):
                    found.add(module)
            return super().reducer_override(obj)

    try:
        Recorder(_NullSink(), protocol=5, buffer_callback=lambda _: None).dump(objects)
    except Exception:  # unpicklable: what was found so far; the real pickling says why
        pass
    return found


def _registered(name: str, registry: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in registry for i in range(1, len(parts) + 1))


@contextmanager
def shipped_by_value(*objects: Any, enabled: bool = True) -> Iterator[list[str]]:
    """Within the block, Ray pickles the local modules that ``objects`` use by value.

    Args:
        *objects: what will be sent to the workers (the model, the score function, ...).
        enabled: False ships nothing (every module must then be importable on the nodes).

    Yields:
        The names of the modules registered for pickling by value, in the order found.

    Example:
        >>> with shipped_by_value(model, score_fn) as names:
        ...     ref = ray.put(spec)
    """
    from ray import cloudpickle

    registered: list[types.ModuleType] = []
    try:
        for _ in range(MAX_ROUNDS if enabled else 0):
            registry = set(cloudpickle.list_registry_pickle_by_value())
            new = [
                sys.modules[name] for name in sorted(_referenced_modules(objects))
                if name in sys.modules and not _registered(name, registry)
                and is_local_module(sys.modules[name])
            ]
            if not new:
                break
            for module in new:
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
        yield [m.__name__ for m in registered]
    finally:
        for module in registered:
            try:
                cloudpickle.unregister_pickle_by_value(module)
            except ValueError:  # unregistered by someone else meanwhile
                pass
