#!/usr/bin/env python
"""Benchmark: an MPI sweep through hpcorch against the same runs started by hand with mpirun.

    .venv/bin/python scripts/bench_mpi.py [--tasks 2 4] [--lrs 0.1 0.05 0.02 0.01]

For each rank count N it times, in the same invocation and on a copy of the
example app:
  hpcorch local   python train.py -m resources.tasks=N lr=...       (provider=local)
  hpcorch mpi     python train.py -m provider=mpi provider.hosts=[localhost:N] ...
  peer            one `mpirun -n N python train.py lr=X` per learning rate, one after
                  another (what a researcher scripts without hpcorch), with the flags
                  this machine needs (--allow-run-as-root as root, --oversubscribe
                  when N exceeds the cores)
and prints the wall times and the ratios hpcorch / peer. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--lrs", nargs="+", default=["0.1", "0.05", "0.02", "0.01"])
    args = parser.parse_args()
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        sys.exit("mpirun not found: run scripts/mpi-up.sh")
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="hpcorch-bench-mpi-") as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        shutil.copy(ROOT / "train.py", app / "train.py")
        shutil.copytree(ROOT / "conf", app / "conf")
        env = {**os.environ, "HPCORCH_HOME": str(Path(tmp) / "home")}
        py = sys.executable
        lrs = "lr=" + ",".join(args.lrs)
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[0]
        print(f"# {len(args.lrs)} runs per sweep, {cores} cores, {version}")
        print(f"{'ranks':>5} {'hpcorch local':>14} {'hpcorch mpi':>12} {'peer mpirun':>12} "
              f"{'local/peer':>11} {'mpi/peer':>9}")
        for n in args.tasks:
            common = ["hpcorch.progress=off", "hpcorch.rerun=true", f"resources.tasks={n}",
                      *(["resources.oversubscribe=true"] if n > cores else [])]
            local = timed([py, "train.py", "-m", lrs, *common,
                           f"hydra.sweep.dir={tmp}/local{n}"], app, env)
            mpi = timed([py, "train.py", "-m", lrs, *common, "provider=mpi",
                         f"provider.hosts=[localhost:{n}]", f"hydra.sweep.dir={tmp}/mpi{n}"],
                        app, env)
            flags = (["--allow-run-as-root"] if os.geteuid() == 0 else []) + (
                ["--oversubscribe"] if n > cores else [])
            start = time.perf_counter()
            for i, lr in enumerate(args.lrs):
                timed([mpirun, "-n", str(n), *flags, py, "train.py", f"lr={lr}",
                       f"hydra.run.dir={tmp}/peer{n}/{i}"], app, env)
            peer = time.perf_counter() - start
            print(f"{n:>5} {local:>13.2f}s {mpi:>11.2f}s {peer:>11.2f}s "
                  f"{local / peer:>11.2f} {mpi / peer:>9.2f}")


if __name__ == "__main__":
    main()
