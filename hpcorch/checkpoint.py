"""Checkpoints for runs that may be stopped and started again (time limits, preemption).

On Slurm a run gets SIGUSR1 `provider.signal_grace_s` seconds before its time
limit, and SIGTERM when it is preempted, requeued or cancelled. A preempted run
is always requeued. A run that reaches its time limit is requeued (at most
`provider.max_requeues` times) only when it can resume, as submitit requeues
only checkpointable jobs (`provider.requeue_on_timeout`, default `checkpointed`):
it has saved a checkpoint (a file in its checkpoint directory, by `save()` or
under `path()`), or it catches the signal (`on_signal()` / `requested()`) and
then saves or calls `stop()`. Any other run ends TIMEOUT instead of starting
from zero again. The same run starts again in the same run directory.
Research code that wants to resume keeps its checkpoint there:

    from hpcorch import checkpoint

    def train(cfg):
        state = checkpoint.load(default={"epoch": 0, "params": init()})
        checkpoint.on_signal(lambda: checkpoint.save(state))   # save when told to stop
        for epoch in range(state["epoch"], cfg.epochs):
            state["params"] = step(state["params"])
            state["epoch"] = epoch + 1
            if checkpoint.requested():       # or poll between steps instead of on_signal
                checkpoint.save(state)
                checkpoint.stop()
        return metrics(state)

`checkpoint.path("model.pt")` gives a file next to the pickle for frameworks
that save their own (torch.save). Without Slurm every function still works
(nothing ever signals; `restarts()` is 0), so the same code runs everywhere.
`restarts()` reads HPCORCH_RESTART_COUNT, which the Slurm and Grid Engine array
tasks set from their engine's restart count (the job contract, hpcorch.jobenv).

Inside an hpcorch run, `save()` and the signal handler also note themselves in
`<run dir>/.hpcorch/checkpoint.json`; the Slurm array task reads it (`usage()`)
to decide whether a run that reaches its time limit is worth requeueing.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.jobenv import RESTART_ENV, SPEC_ENV
from hpcorch.store.records import atomic_write_json, meta_dir, read_json

#: The sub-directory of the run directory that holds checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: Exit status of a run that stopped to be resumed (EX_TEMPFAIL): not a success, not a bug.
EXIT_RESUME = 75
#: Signals that mean "save now and stop": the pre-time-limit warning and termination.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
#: In the run's `.hpcorch` directory: what this module was used for (see `usage()`).
USAGE_FILE = "checkpoint.json"

_requested: list[int] = []
_callbacks: list[Callable[[], object]] = []
_installed = False


class Stop(SystemExit):
    """Raised by `stop()`: ends the run without a record, so it is resumed, not failed."""


@dataclass(frozen=True)
class Usage:
    """How a run uses checkpoints, as its array task sees it from outside the run."""

    saved: bool = False
    """A checkpoint file exists in the run's checkpoint directory (by `save()` or not)."""
    handles_signals: bool = False
    """The run installed the stop-signal handler (`on_signal()`, `requested()`): it is
    told before its time limit and can save then."""

    @property
    def resumable(self) -> bool:
        """Worth requeueing before a time limit: it resumes rather than starts over."""
        return self.saved or self.handles_signals


def usage(run_dir: str | Path) -> Usage:
    """What `run_dir`'s run did with this module so far (read by the Slurm array task)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    try:
        saved = any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        saved = False
    try:
        noted = read_json(meta_dir(run_dir) / USAGE_FILE)
    except (OSError, ValueError):
        noted = {}
    return Usage(saved=saved or bool(noted.get("saves")),
                 handles_signals=bool(noted.get("handles_signals")))


def _note(**values: Any) -> None:
    """Merge `values` into the run's usage file; only inside an hpcorch run (its `.hpcorch`
    directory exists), never creating directories elsewhere."""
    folder = meta_dir(run_dir())
    if not folder.is_dir():
        return
    path = folder / USAGE_FILE
    try:
        data = read_json(path)
    except (OSError, ValueError):
        data = {}
    if "saves" in values:
        values["saves"] = int(data.get("saves", 0)) + 1
    try:
        atomic_write_json(path, {**data, **values}, durable=False)
    except OSError:
        pass  # a note for the scheduler's benefit; the checkpoint itself was written


def run_dir() -> Path:
    """This run's directory: Hydra's output dir, else the spec's run_dir, else the cwd."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf.errors import MissingMandatoryValue

        if HydraConfig.initialized():
            return Path(str(HydraConfig.get().runtime.output_dir))
    except (ImportError, ValueError, MissingMandatoryValue):
        pass  # not inside a Hydra job (or before its output dir is known)
    spec = os.environ.get(SPEC_ENV)
    if spec and Path(spec).exists():
        return Path(str(read_json(spec)["run_dir"]))
    return Path.cwd()


def directory() -> Path:
    """`<run dir>/checkpoints`, created on first use."""
    path = run_dir() / CHECKPOINT_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def path(name: str = "last.pkl") -> Path:
    """A file in the checkpoint directory (for libraries that write their own files)."""
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"checkpoint name {name!r}: must be a plain file name")
    return directory() / name


def save(obj: Any, name: str = "last.pkl") -> Path:
    """Pickle `obj` atomically (temporary file, fsync, rename): a crash keeps the old one."""
    target = path(name)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    _note(saves=1, last_saved=name, saved_at=time.time())
    return target


def load(name: str = "last.pkl", default: Any = None) -> Any:
    """The last saved checkpoint, or `default` on the first start."""
    target = path(name)
    if not target.exists():
        return default
    with open(target, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - the run's own file, written by save()


def exists(name: str = "last.pkl") -> bool:
    """Whether a checkpoint of that name was saved by an earlier start of this run."""
    return (run_dir() / CHECKPOINT_DIR / name).exists()


def restarts() -> int:
    """How often this run was started again (0 on the first start): the engine's restart
    count, which the array task of every batch provider passes to the run as
    HPCORCH_RESTART_COUNT (hpcorch.jobenv.RESTART_ENV)."""
    try:
        return int(os.environ.get(RESTART_ENV, "0") or 0)
    except ValueError:
        return 0


def requested() -> bool:
    """True once a stop signal arrived (installs the signal handler on first call)."""
    install()
    return bool(_requested)


def on_signal(callback: Callable[[], object], exit_after: bool = True) -> None:
    """Call `callback` when a stop signal arrives (typically: save a checkpoint).

    With `exit_after` the run then ends at once with `Stop` (no record is
    written, so hpcorch resumes the run instead of recording a failure).
    """
    _callbacks.append(callback if not exit_after else _then_stop(callback))
    install()


def stop() -> None:
    """End the run now, to be resumed from its checkpoint (raises `Stop`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    raise Stop(EXIT_RESUME)


def install() -> None:
    """Catch the stop signals (idempotent; only in the main thread, as Python requires)."""
    global _installed
    if _installed:
        return
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _handler)
    except ValueError:  # not the main thread: polling requested() is not possible here
        return
    _installed = True
    _note(handles_signals=True)


def _handler(signum: int, _frame: object) -> None:
    first = not _requested
    _requested.append(signum)
    if first:
        for callback in list(_callbacks):
            callback()


def _then_stop(callback: Callable[[], object]) -> Callable[[], object]:
    def run() -> None:
        callback()
        stop()
    return run
