"""Benchmark: N trivial runs on the local Slurm, hydra-submitit-launcher vs hpcorch, one invocation.

    scripts/in-netns.sh .venv/bin/python scripts/bench_slurm.py [--runs 200] [--pack 25]

Writes a tiny Hydra app (its task returns at once) to a temporary directory and
runs the same sweep through both launchers, one after the other:

    peer:    python app.py --config-name peer -m x=range(0,N)   (hydra/launcher=submitit_slurm)
    hpcorch: python app.py --config-name hp -m x=range(0,N) provider=slurm provider.pack=K

For each it prints the wall time from command to exit with all N results on disk
(submitit's result pickles, hpcorch's SUCCEEDED records) and how often sbatch,
sacct, squeue, scontrol and scancel ran, counted by a PATH shim directory of
small wrapper scripts that log each call and exec the real binary. Then the
ratios, against the targets: hpcorch >= 2x faster, <= 1 sbatch per array, no
more scheduler queries (sacct + squeue) than the peer.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ("sbatch", "sacct", "squeue", "scontrol", "scancel")

APP = '''
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="hp")
def main(cfg):
    return {"x": float(cfg.x)}

if __name__ == "__main__":
    main()
'''

PEER_CONFIG = """defaults:
  - override hydra/launcher: submitit_slurm
  - _self_
x: 0
hydra:
  launcher:
    timeout_min: 10
    cpus_per_task: 1
    submitit_folder: ${hydra.sweep.dir}/.submitit/%j
"""

HP_CONFIG = """defaults:
  - hpcorch: default
  - _self_
x: 0
"""


def write_shims(shim_dir: Path) -> None:
    """One wrapper per Slurm command: log the call, exec the real binary."""
    shim_dir.mkdir(parents=True)
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            sys.exit(f"bench_slurm: {tool} not found (run inside scripts/in-netns.sh)")
        script = shim_dir / tool
        script.write_text("#!/bin/sh\n"
                          f'echo {tool} >> "$BENCH_CALL_LOG"\n'
                          f'exec {shlex.quote(real)} "$@"\n')
        script.chmod(0o755)


def run(name: str, argv: list[str], cwd: Path, shim_dir: Path, env_extra: dict[str, str],
        timeout: float) -> tuple[float, dict[str, int], int, str]:
    """Run one launcher's sweep; (wall s, calls per tool, exit status, output tail)."""
    log = cwd / f"calls-{name}.log"
    log.write_text("")
    env = {**os.environ, **env_extra, "BENCH_CALL_LOG": str(log),
           "PATH": f"{shim_dir}:{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    wall = time.perf_counter() - start
    calls = {tool: 0 for tool in TOOLS}
    for line in log.read_text().split():
        calls[line] = calls.get(line, 0) + 1
    return wall, calls, done.returncode, (done.stdout + done.stderr)[-2000:]


def count_results(root: Path, pattern: str, needle: str = "") -> int:
    """Result files under `root` (records must contain `needle`)."""
    return sum(1 for p in root.glob(pattern) if not needle or needle in p.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pack", type=int, default=25, help="hpcorch provider.pack")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per launcher")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_slurm_"))
    app = work / "app"
    (app / "conf").mkdir(parents=True)
    (app / "app.py").write_text(APP)
    (app / "conf" / "peer.yaml").write_text(PEER_CONFIG)
    (app / "conf" / "hp.yaml").write_text(HP_CONFIG)
    shims = work / "shims"
    write_shims(shims)
    sweep = f"x=range(0,{args.runs})"
    python = sys.executable
    print(f"bench_slurm: {args.runs} trivial runs per launcher, work dir {work}", flush=True)

    results = {}
    peer_dir = work / "peer"
    results["hydra-submitit-launcher"] = run(
        "peer", [python, "app.py", "--config-name", "peer", "-m", sweep,
                 f"hydra.sweep.dir={peer_dir}"], app, shims, {}, args.timeout)
    peer_done = count_results(peer_dir / ".submitit", "*/*_result.pkl")

    hp_dir = work / "hpcorch"
    results["hpcorch"] = run(
        "hpcorch", [python, "app.py", "--config-name", "hp", "-m", sweep, "provider=slurm",
                    f"provider.pack={args.pack}", "hpcorch.progress=off",
                    f"hydra.sweep.dir={hp_dir}"],
        app, shims, {"HPCORCH_HOME": str(work / "hpcorch-home")}, args.timeout)
    hp_done = count_results(hp_dir, "*/.hpcorch/record.json", '"state": "SUCCEEDED"')
    arrays = len(list((hp_dir / ".hpcorch" / "slurm" / "submitit").glob("*_submission.sh")))

    print()
    print(f"{'launcher':<24} {'wall s':>8} {'results':>8} " + " ".join(f"{t:>8}" for t in TOOLS))
    for (name, (wall, calls, rc, _)), done in zip(results.items(), (peer_done, hp_done),
                                                  strict=True):
        print(f"{name:<24} {wall:>8.1f} {done:>8} " + " ".join(f"{calls[t]:>8}" for t in TOOLS)
              + ("" if rc == 0 else f"   (exit status {rc})"))
    peer_wall, peer_calls, peer_rc, peer_tail = results["hydra-submitit-launcher"]
    hp_wall, hp_calls, hp_rc, hp_tail = results["hpcorch"]
    peer_queries = peer_calls["sacct"] + peer_calls["squeue"]
    hp_queries = hp_calls["sacct"] + hp_calls["squeue"]
    ratio = peer_wall / hp_wall if hp_wall > 0 else float("inf")
    print()
    print(f"speed-up (peer wall / hpcorch wall): {ratio:.2f}x   [target >= 2x: "
          f"{'met' if ratio >= 2 else 'MISSED'}]")
    print(f"hpcorch sbatch per array: {hp_calls['sbatch']} sbatch / {arrays} array(s)   "
          f"[target <= 1: {'met' if arrays and hp_calls['sbatch'] <= arrays else 'MISSED'}]")
    print(f"scheduler queries (sacct + squeue): hpcorch {hp_queries}, peer {peer_queries}   "
          f"[target hpcorch <= peer: {'met' if hp_queries <= peer_queries else 'MISSED'}]")
    print(f"(hpcorch pack={args.pack}: {args.runs} runs in "
          f"{-(-args.runs // args.pack)} array task(s); scontrol = one `show config`)")
    failed = False
    for name, rc, done, tail in (("hydra-submitit-launcher", peer_rc, peer_done, peer_tail),
                                 ("hpcorch", hp_rc, hp_done, hp_tail)):
        if rc != 0 or done != args.runs:
            failed = True
            print(f"\n{name}: exit status {rc}, {done}/{args.runs} results; output tail:\n{tail}")
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
