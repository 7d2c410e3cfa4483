"""Warm start, one implementation: import a Hydra app once in a worker, fork per run.

Used where one process runs many runs of one app: a packed Slurm or Grid Engine
array task and a Ray worker's warm tasks. (The local provider forks its
orchestrator, which is the app's own process and warm already; every fork,
wherever it comes from, becomes its run through hpcorch.worker.forked.)

A forked run executes `python SCRIPT ARGS` exactly, in-process: the same argv,
Hydra's own CLI and RUN mode, the run's environment, directory and log files.
What it inherits is only what every run of the app pays for at start-up: the
script's imports, Hydra's plugin scan and parser tables, the sweep-wide parts
of the environment fingerprint and the config composition (hpcorch._hydra.warm).
"""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hpcorch._hydra.warm import compose_without_running, install, mark_child, skip_mode_probe
from hpcorch.spec import RunSpec
from hpcorch.worker.forked import become_run, exit_with, run_script_as_main

#: What every run of a Hydra app imports besides its script's own imports (measured: about
#: a third of a trivial run's CPU time when left to each fork).
WARM_MODULES = (
    "hydra", "omegaconf", "omegaconf._impl", "yaml", "hydra._internal.hydra",
    "hydra._internal.utils", "hydra._internal.config_loader_impl",
    "hydra._internal.defaults_list", "hydra._internal.logging_config", "hydra.core.utils",
    "hydra.core.override_parser.overrides_parser",
    "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra._internal.core_plugins.structured_config_source", "antlr4.LL1Analyzer",
    "importlib.readers", "numpy", "numpy.random", "hpcorch.conf", "hpcorch.worker.callback",
    "hpcorch.repro.seeds",
)

_warmed: set[str] = set()


def warm_script(specs: Iterable[RunSpec]) -> str | None:
    """The one app script every run executes as `<this interpreter> SCRIPT.py ...`, with
    one rank and no image; None when any run is not such a run (it then starts cold: a
    fork of this process would run another interpreter's code, or on the host)."""
    scripts = set()
    for spec in specs:
        cmd = spec.command
        if spec.image or spec.resources.tasks > 1 or len(cmd) < 2 or not cmd[1].endswith(".py"):
            return None
        if not os.path.isfile(cmd[1]) or not _same_file(cmd[0], sys.executable):
            return None
        scripts.add(cmd[1])
    return scripts.pop() if len(scripts) == 1 else None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def warm_up(script: str, spec: RunSpec) -> None:
    """Once per process and script, before the first fork: import what the script imports
    at top level and what every run imports, scan Hydra's plugins, fill the fingerprint's
    sweep-wide caches and compose `spec`'s config without running it, so every fork
    starts with Hydra's parser tables and caches in place. An error here only costs
    speed: the run itself reports it."""
    if script in _warmed:
        return
    _warmed.add(script)
    names = list(WARM_MODULES)
    with contextlib.suppress(OSError, SyntaxError, ValueError):
        tree = ast.parse(Path(script).read_text(encoding="utf-8"))
        for node in tree.body:  # top-level imports only: the script's own code never runs
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module)
    added = str(Path(script).parent)
    sys.path.insert(0, added)
    try:
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # Hydra's plugin scan: ~0.3 s per process
            from hydra.core.plugins import Plugins

            Plugins.instance()
        with contextlib.suppress(Exception):
            from hpcorch.identity import script_directory
            from hpcorch.repro.fingerprint import prime_caches

            prime_caches(script_directory(script))
        with contextlib.suppress(Exception):
            skip_mode_probe()
            if install():
                compose_without_running(script, spec.command[2:], spec.workdir or spec.run_dir)
    finally:
        sys.path.remove(added)


def fork_run(spec: RunSpec, script: str, env: Mapping[str, str], out_fd: int, err_fd: int, *,
             signals: Sequence[int] | None = None) -> int:
    """Fork; the child becomes the run (`become_run`) and executes `python SCRIPT ARGS`
    in-process, never returning. Returns the child's pid in the parent. The child's
    sys.stdout/stderr are bound to the run's files whatever the parent's were (in a Ray
    worker or under pytest they are not file descriptors 1 and 2)."""
    sys.stdout.flush()
    sys.stderr.flush()
    # A collection in the child would touch (so copy) all the parent's objects: freeze
    # them out of its view (the local provider measured ~100 ms a run).
    gc.freeze()
    pid = os.fork()
    if pid:
        gc.unfreeze()
        return pid

    def body() -> int:
        extra = {} if signals is None else {"signals": signals}
        become_run(out_fd, err_fd, env, spec.workdir or spec.run_dir,
                   rebind_streams=True, **extra)
        sys.path.insert(0, str(Path(script).parent))  # as `python SCRIPT` puts it
        mark_child()
        return run_script_as_main([script, *spec.command[2:]])

    exit_with(body)
