"""Checkpoints for runs that may be stopped and started again (time limits, preemption).

On Slurm a run gets SIGUSR1 `provider.signal_grace_s` seconds before its time
limit, and SIGTERM when it is preempted, requeued or cancelled. hpcorch then
requeues it (at most `provider.max_requeues` times) and starts the same run
again, in the same run directory. Research code that wants to resume keeps
its checkpoint there:

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
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcorch.store.records import read_json

#: The sub-directory of the run directory that holds checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: Exit status of a run that stopped to be resumed (EX_TEMPFAIL): not a success, not a bug.
EXIT_RESUME = 75
#: Signals that mean "save now and stop": the pre-time-limit warning and termination.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

_requested: list[int] = []
_callbacks: list[Callable[[], object]] = []
_installed = False


class Stop(SystemExit):
    """Raised by `stop()`: ends the run without a record, so it is resumed, not failed."""


def run_dir() -> Path:
    """This run's directory: Hydra's output dir, else the spec's run_dir, else the cwd."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf.errors import MissingMandatoryValue

        if HydraConfig.initialized():
            return Path(str(HydraConfig.get().runtime.output_dir))
    except (ImportError, ValueError, MissingMandatoryValue):
        pass  # not inside a Hydra job (or before its output dir is known)
    spec = os.environ.get("HPCORCH_SPEC")
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
    """How often this run was started again (SLURM_RESTART_COUNT; 0 on the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
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
