"""What the worker pins when a run starts, and what it tells the run record afterwards.

    seeded = start_run(seed, cfg.hpcorch.repro)   # before the task function
    facts = run_facts()                            # after it: seeded, pinned, splits

Torch is never imported here: `import torch` costs seconds (6-8 s measured on
this project's 2-core machine, against 0.7 s for numpy), which a run that
does not use torch must not pay. When torch is already imported it is seeded
and configured at once; otherwise a one-shot import hook does it the moment
the research code imports torch, so a lazy `import torch` inside the task
function is seeded too.

Thread-pool sizes are read by OpenMP/BLAS when they load. Cold jobs get the
variables in their start-up environment (the launcher puts them into
RunSpec.env); for libraries already loaded in this process (a warm, forked
run) threadpoolctl resizes the pools when it is installed, and the record
says so either way.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hpcorch.repro import splits
from hpcorch.repro.seeds import apply_seed, seed_torch
from hpcorch.repro.settings import THREAD_ENV_VARS, ReproSettings, repro_settings

#: The thread variables as this process found them when hpcorch.repro loaded: a cold job
#: has them from its start-up environment, a warm (forked) run has its launcher's.
_STARTUP_ENV = {var: os.environ.get(var, "") for var in THREAD_ENV_VARS}
# One run at a time per process: the worker resets both at every run start.
_FACTS: dict[str, Any] = {}
_SEEDED: list[str] = []


def start_run(seed: int, node: Any = None) -> list[str]:
    """Pin and seed everything for a run starting now; returns the names of what was done.

    `node` is the typed `ReproSettings`, or, in a job that has only its config, the
    `hpcorch.repro` node (DictConfig, mapping or None), parsed here once.
    """
    settings = repro_settings(node)
    splits.reset_recorded()
    _remove_hooks()
    pinned: dict[str, Any] = {}
    seeded: list[str] = []
    env = settings.job_env()
    os.environ.update(env)  # for processes this run starts and libraries it loads later
    if env:
        pinned["env"] = env
    threads = settings.pinned_threads
    if threads is not None:
        pinned["loaded_pools"] = limit_loaded_pools(threads)
        seeded.append(f"threads={threads}")
    if settings.strict:
        seeded.append("strict")
    seeded += apply_seed(seed)
    _FACTS.clear()
    _FACTS.update(seed=seed, strict=settings.strict, threads=threads, pinned=pinned)
    _SEEDED[:] = seeded
    torch = sys.modules.get("torch")
    if torch is not None:
        pinned["torch"] = configure_torch(torch, settings)
        _SEEDED.extend(_torch_names(pinned["torch"]))
    else:
        sys.meta_path.insert(0, _AfterImport("torch", lambda module: _late_torch(
            module, seed, settings)))
    return list(_SEEDED)


def run_facts() -> dict[str, Any]:
    """The run's reproducibility facts for its record: seed, what was seeded and pinned, splits."""
    return {**_FACTS, "seeded": list(_SEEDED), "splits": splits.recorded()}


def configure_torch(torch: Any, settings: ReproSettings) -> dict[str, Any]:
    """Apply thread pinning and strict determinism to torch; returns what was set."""
    facts: dict[str, Any] = {"version": str(getattr(torch, "__version__", ""))}
    threads = settings.pinned_threads
    if threads is not None:
        torch.set_num_threads(threads)
        facts["threads"] = torch.get_num_threads()
    if settings.strict:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        facts["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
        facts["cudnn_deterministic"] = True
        facts["cudnn_benchmark"] = False
    return facts


def limit_loaded_pools(threads: int) -> Any:
    """Resize the thread pools of libraries already loaded (threadpoolctl), or say why not."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        if all(_STARTUP_ENV.get(var) == str(threads) for var in THREAD_ENV_VARS):
            return "sized at start-up: the process started with the variables (cold job)"
        return ("not resized: threadpoolctl is not installed (pip install 'hpcorch[repro]'); "
                "the variables apply to processes started from now on")
    threadpool_limits(limits=threads)
    return [{"api": p.get("internal_api", ""), "version": p.get("version", ""),
             "threads": p.get("num_threads")} for p in threadpool_info()]


def _torch_names(facts: dict[str, Any]) -> list[str]:
    return ["torch.deterministic"] if facts.get("deterministic_algorithms") else []


def _late_torch(torch: ModuleType, seed: int, settings: ReproSettings) -> None:
    """Torch was imported after the run started: seed and configure it now."""
    try:
        names = seed_torch(torch, seed)
        facts = configure_torch(torch, settings)
    except Exception as exc:  # noqa: BLE001 - never break the research code's import
        _FACTS.setdefault("pinned", {})["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    facts["when"] = "on import, after the run started"
    _FACTS.setdefault("pinned", {})["torch"] = facts
    _SEEDED.extend(names + _torch_names(facts))


class _AfterImport(importlib.abc.MetaPathFinder):
    """A one-shot finder: when `name` is first imported, run `action(module)` after it loads."""

    def __init__(self, name: str, action: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.action = action

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        _remove_hooks()  # one shot; also keeps the lookup below from finding us again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.action)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """Executes the real loader, puts it back in place, then runs the action."""

    def __init__(self, inner: Any, action: Callable[[ModuleType], None]) -> None:
        self._inner = inner
        self._action = action

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        module.__loader__ = self._inner
        self._inner.exec_module(module)
        self._action(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _remove_hooks() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterImport)]
