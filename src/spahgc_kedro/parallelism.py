"""Work groups: how the embedding and train stages split into nodes that can run concurrently.

Kedro fixes a pipeline's nodes before parameters are read, so the group counts come
from `conf/<env>/parallelism.yml` when the pipelines are built, not from `--params`.
SequentialRunner runs the groups one after another; ParallelRunner and the DaskRunner
run them at the same time.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_GROUPS = {"section_groups": 2, "fold_groups": 4}
# the group functions made so far, by the name they pickle under (see `group_function`)
_GROUP_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _conf_source() -> Path:
    from kedro.framework.project import settings

    source = Path(settings.CONF_SOURCE)
    if source.is_absolute():
        return source
    # the project root: the working directory for `kedro run`, else this source checkout
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / source).is_dir():
            return root / source
    return Path.cwd() / source


def group_count(name: str) -> int:
    """The configured number of work groups for `section_groups` or `fold_groups` (>= 1)."""
    import yaml

    if name not in DEFAULT_GROUPS:
        raise KeyError(f"Unknown work group setting {name!r}; expected one of {sorted(DEFAULT_GROUPS)}.")
    value, origin = DEFAULT_GROUPS[name], "the default"
    source = _conf_source()
    for env in ("base", "local"):  # local overrides base, as for every other config file
        path = source / env / "parallelism.yml"
        if path.is_file():
            config = yaml.safe_load(path.read_text()) or {}
            if name in config:
                value, origin = config[name], str(path)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{origin}: {name} must be a whole number >= 1, got {value!r}.")
    return value


def members(keys: list[str] | set[str], group: int, groups: int) -> list[str]:
    """The keys a group owns: every `groups`-th of the sorted keys, starting at `group`."""
    return sorted(keys)[group::groups]


def in_worker_process() -> bool:
    """True inside a ParallelRunner / Dask worker process (not the process that started the run)."""
    return multiprocessing.parent_process() is not None


def worker_threads(groups: int) -> int:
    """Torch threads for one group in a worker process: the cores shared by the groups, at least 1."""
    return max(1, (os.cpu_count() or 1) // groups)


def merge_groups(group_results: tuple[dict[str, Any], ...], unit: str) -> dict[str, Any]:
    """One dict, in key order, from the work groups' dicts; fails on a key two groups made."""
    merged: dict[str, Any] = {}
    for results in group_results:
        repeated = sorted(set(merged) & set(results))
        if repeated:
            raise ValueError(f"{unit} {repeated} were made by two work groups; groups must split them disjointly.")
        merged.update(results)
    return dict(sorted(merged.items()))


def group_function(func: Callable[..., Any], group: int, groups: int) -> Callable[..., Any]:
    """`func` with `group` and `groups` as its defaults.

    A copy of the function itself rather than a `partial`, so kedro-viz shows the node's code and file; it
    pickles by name (ParallelRunner's and Dask's workers) and this module's `__getattr__` rebuilds it there.
    """
    name = f"group_function:{func.__module__.replace('.', '/')}:{func.__name__}:{group}:{groups}"
    if name not in _GROUP_FUNCTIONS:
        code, values = func.__code__, func.__defaults__ or ()
        arguments = code.co_varnames[code.co_argcount - len(values) : code.co_argcount]
        defaults = dict(zip(arguments, values, strict=True))
        if not {"group", "groups"} <= set(defaults):
            raise TypeError(f"{func.__name__} needs `group` and `groups` arguments with defaults to run in groups.")
        defaults.update(group=group, groups=groups)
        copy = types.FunctionType(code, func.__globals__, func.__name__, tuple(defaults.values()), func.__closure__)
        copy.__kwdefaults__, copy.__doc__ = func.__kwdefaults__, func.__doc__
        copy.__annotations__, copy.__module__, copy.__qualname__ = func.__annotations__, __name__, name
        _GROUP_FUNCTIONS[name] = copy
    return _GROUP_FUNCTIONS[name]


def __getattr__(name: str) -> Callable[..., Any]:
    """A group function by the name it pickled under (a worker process has not built the pipelines)."""
    if not name.startswith("group_function:"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _, module, func_name, group, groups = name.split(":")
    func = getattr(importlib.import_module(module.replace("/", ".")), func_name)
    return group_function(func, int(group), int(groups))


def group_nodes(func: Callable[..., Any], inputs: list[str], output: str, name: str, groups: int) -> list[Any]:
    """`groups` Kedro nodes running `func(..., group=i, groups=groups)`, output `<output>_group_<i>`."""
    from kedro.pipeline import node

    return [
        node(group_function(func, group, groups), inputs, f"{output}_group_{group}", name=f"{name}_{group}")
        for group in range(groups)
    ]
