#!/usr/bin/env python3
"""Benchmark: planning a 3-stage pipeline (prepare -> train sweep -> evaluate) with hpcorch
and with Snakemake, in one invocation; prints both figures and the ratio (issue 12 point 6).

    .venv/bin/python scripts/bench_pipeline.py [--runs 1000 10000] [--shards 10]
        [--repeat 3] [--peer-venv /tmp/bench-snakemake-venv] [--no-peer] [--limit 2.0]

The pipeline: prepare (sweep shard=range(0,SHARDS)) -> train (needs prepare: each,
sweep seed=range(0,RUNS/SHARDS): RUNS runs, each consuming its shard) -> evaluate
(needs train: all, one run consuming every train run).

- hpcorch: `pipeline_from` + `plan_pipeline` on the pipeline's data, in a fresh
  `python -c` process per repetition. Three figures: the whole process (interpreter
  start to exit, as Snakemake's figure is), imports + plan, and the plan alone.
  The child checks the plan (run counts, each train run's shard input, evaluate's
  inputs) before it reports, so a wrong plan stops the benchmark.
- Snakemake (the peer): an equivalent Snakefile (rule prepare per shard, rule train
  per (shard, seed), rule evaluate on every train output), timed as
  `snakemake -n --cores 1 --quiet` (DAG building, nothing runs). One untimed
  `--quiet rules` run per size checks its job counts. The same dry run of a
  one-job Snakefile is timed too (its startup: imports, parsing, one-job DAG), so
  its figure can be read without that fixed cost. Snakemake is installed, pinned,
  into its own venv (--peer-venv, kept between invocations), never into hpcorch's.

Each figure is the best and the median of --repeat repetitions; hpcorch and the peer
alternate within each repetition (the machine is shared: alternating spreads the
noise over both). The ratio is Snakemake's median / hpcorch's median, both whole
processes. Exit 1 if hpcorch's whole-process median for 10^4 train runs is --limit
seconds or more (the issue's "under 2 s"); exit 0 otherwise, also when Snakemake
cannot be installed (the output says so and hpcorch's figures still print).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEMAKE_VERSION = "9.27.1"
GATED_RUNS = 10_000

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
from hpcorch.orchestrate.pipeline.config import pipeline_from
from hpcorch.orchestrate.pipeline.plan import plan_pipeline
t1 = time.perf_counter()
shards, seeds, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
raw = {"name": "bench", "stages": {
    "prepare": {"app": "prepare.py", "sweep": {"shard": f"range(0,{shards})"}},
    "train": {"app": "train.py", "sweep": {"seed": f"range(0,{seeds})"},
              "needs": {"prepare": "each"}},
    "evaluate": {"app": "evaluate.py", "needs": {"train": "all"}}}}
plan = plan_pipeline(pipeline_from(raw, directory=directory))
t2 = time.perf_counter()
# The plan must be the right one, or the figure means nothing.
counts = {stage: len(runs) for stage, runs in plan.runs.items()}
assert counts == {"prepare": shards, "train": shards * seeds, "evaluate": 1}, counts
shard_of = {}
for run in plan.runs["prepare"]:
    shard_of[run.num] = next(o.partition("=")[2] for o in run.overrides if o.startswith("shard="))
for run in plan.runs["train"]:
    (stage, num), = run.inputs
    assert stage == "prepare" and f"++shard={shard_of[num]}" in run.overrides, run
(evaluate,) = plan.runs["evaluate"]
assert sorted(evaluate.inputs) == sorted(("train", r.num) for r in plan.runs["train"])
print(json.dumps({"imports": t1 - t0, "plan": t2 - t1, "counts": counts}))
'''

ONE_JOB = 'rule one:\n    output: "one.out"\n    shell: "touch {output}"\n'
DRY_RUN = ["-n", "--cores", "1", "--quiet"]

SNAKEFILE = '''\
# Written by scripts/bench_pipeline.py: the same pipeline as hpcorch plans.
SHARDS = range({shards})
SEEDS = range({seeds})

wildcard_constraints:
    shard=r"\\d+",
    seed=r"\\d+",

rule evaluate:
    input: expand("train/{{shard}}/{{seed}}.out", shard=SHARDS, seed=SEEDS)
    output: "evaluate.out"
    shell: "touch {{output}}"

rule train:
    input: "prepare/{{shard}}.out"
    output: "train/{{shard}}/{{seed}}.out"
    shell: "touch {{output}}"

rule prepare:
    output: "prepare/{{shard}}.out"
    shell: "touch {{output}}"
'''


def run_timed(argv: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    """Wall seconds of one command and its stdout; a failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    took = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        sys.exit(f"{argv[:4]} ... failed (rc={proc.returncode}); see {log}:\n" + "\n".join(tail))
    return took, proc.stdout


def peer_snakemake(venv: Path) -> tuple[Path | None, str]:
    """The pinned snakemake in `venv`, installing it there if needed; (None, why) if it cannot."""
    exe = venv / "bin" / "snakemake"

    def version() -> str:
        if not exe.exists():
            return ""
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    if version() == SNAKEMAKE_VERSION:
        return exe, f"snakemake {SNAKEMAKE_VERSION} from {venv}"
    print(f"installing snakemake=={SNAKEMAKE_VERSION} into {venv} ...", file=sys.stderr,
          flush=True)
    steps = []
    if not (venv / "bin" / "python").exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                  f"snakemake=={SNAKEMAKE_VERSION}"])
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            return None, f"`{' '.join(argv[2:])}` failed (rc={proc.returncode}): {tail}"
    found = version()
    if found != SNAKEMAKE_VERSION:
        return None, f"installed, but `snakemake --version` says {found or 'nothing'}"
    return exe, f"snakemake {SNAKEMAKE_VERSION}, installed now into {venv}"


def check_snakemake_dag(exe: Path, work: Path, shards: int, runs: int) -> None:
    """One untimed dry run that prints the job stats: they must be the pipeline's runs."""
    _, out = run_timed([str(exe), "-n", "--cores", "1", "--quiet", "rules"], work,
                       work / "check.log")
    stats = {}
    for line in out.split("Job stats:", 1)[-1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    want = {"prepare": shards, "train": runs, "evaluate": 1, "total": shards + runs + 1}
    if stats != want:
        sys.exit(f"snakemake planned {stats}, not {want}; see {work / 'check.log'}")


def best_median(values: list[float]) -> str:
    """`best X s, median Y s`."""
    return f"best {min(values):7.3f} s  median {statistics.median(values):7.3f} s"


def main() -> int:
    """Run the benchmark, print the figures; exit 1 if hpcorch misses the limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, GATED_RUNS],
                        help="train (middle stage) sizes to measure, each a multiple of --shards")
    parser.add_argument("--shards", type=int, default=10, help="prepare's runs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peer-venv", type=Path, default=Path("/tmp/bench-snakemake-venv"),
                        help="where snakemake is installed (kept between invocations)")
    parser.add_argument("--no-peer", action="store_true", help="measure hpcorch only")
    parser.add_argument("--limit", type=float, default=2.0,
                        help=f"hpcorch's planning of {GATED_RUNS} train runs must take less (s)")
    args = parser.parse_args()
    for runs in args.runs:
        if args.shards < 1 or runs < args.shards or runs % args.shards:
            parser.error(f"--runs {runs}: a multiple of --shards ({args.shards}), at least it")
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1")

    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    exe, peer_note = (None, "") if args.no_peer else peer_snakemake(args.peer_venv)
    print(f"pipeline planning: prepare ({args.shards} runs) -> train (each) -> evaluate (all); "
          f"{args.repeat} repetition(s), {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; logs in {root}")
    print(f"hpcorch: {sys.executable}; peer: "
          + (peer_note if exe else "not measured (--no-peer)" if args.no_peer
             else f"NOT MEASURED: Snakemake unavailable: {peer_note}"), flush=True)

    startup: list[float] = []
    if exe:
        (root / "one-job").mkdir()
        (root / "one-job" / "Snakefile").write_text(ONE_JOB, encoding="utf-8")
        for rep in range(args.repeat):
            startup.append(run_timed([str(exe), *DRY_RUN], root / "one-job",
                                     root / "one-job" / f"{rep}.log")[0])
    gate: float | None = None
    for runs in args.runs:
        seeds = runs // args.shards
        work = root / f"runs-{runs}"
        work.mkdir()
        if exe:
            (work / "Snakefile").write_text(SNAKEFILE.format(shards=args.shards, seeds=seeds),
                                            encoding="utf-8")
            check_snakemake_dag(exe, work, args.shards, runs)
        ours: dict[str, list[float]] = {"process": [], "imports": [], "plan": []}
        peer: list[float] = []
        print(f"\n{runs} train runs ({args.shards} shards x {seeds} seeds), "
              f"{args.shards + runs + 1} runs in all:", flush=True)
        for rep in range(args.repeat):
            argv = [sys.executable, "-c", CHILD, str(args.shards), str(seeds), str(work / "pl")]
            took, out = run_timed(argv, work, work / f"hpcorch-{rep}.log")
            figures = json.loads(out.strip().splitlines()[-1])
            ours["process"].append(took)
            ours["imports"].append(figures["imports"] + figures["plan"])
            ours["plan"].append(figures["plan"])
            line = f"  rep {rep + 1}: hpcorch {took:7.3f} s (plan alone {figures['plan']:.3f} s)"
            if exe:
                took, _ = run_timed([str(exe), *DRY_RUN], work,
                                    work / f"snakemake-{rep}.log")
                peer.append(took)
                line += f"   snakemake -n {took:7.3f} s"
            print(line, flush=True)
        print(f"  hpcorch whole process (python start to exit)  {best_median(ours['process'])}")
        print(f"  hpcorch imports + pipeline_from + plan        {best_median(ours['imports'])}")
        print(f"  hpcorch pipeline_from + plan (no imports)     {best_median(ours['plan'])}")
        mine = statistics.median(ours["process"])
        if exe:
            print(f"  snakemake -n --cores 1 --quiet (whole)        {best_median(peer)}")
            theirs = statistics.median(peer)
            print(f"  ratio snakemake / hpcorch (whole processes): median {theirs / mine:6.1f}x"
                  f"   best {min(peer) / min(ours['process']):6.1f}x")
            dag = theirs - statistics.median(startup)
            plan = statistics.median(ours["plan"])
            if dag > 0:
                print(f"  without startup: snakemake {dag:.3f} s (its median minus the one-job "
                      f"dry run's) / hpcorch plan alone {plan:.3f} s = {dag / plan:.1f}x")
            else:
                print(f"  without startup: snakemake's median is within its one-job dry run's "
                      f"({dag:+.3f} s: noise); hpcorch plan alone {plan:.3f} s")
        else:
            print("  snakemake: not measured (see the peer line above)")
        if runs == GATED_RUNS:
            gate = mine
    if exe:
        print(f"\nsnakemake startup (dry run of a one-job Snakefile): {best_median(startup)}")
    if gate is None:
        print(f"\nno {GATED_RUNS}-run size measured: the {args.limit} s limit was not checked")
        return 0
    verdict = "OK" if gate < args.limit else "TOO SLOW"
    print(f"\nhpcorch plans {GATED_RUNS} train runs in {gate:.3f} s (median, whole process, "
          f"imports included): {verdict} (limit {args.limit} s)")
    return 0 if gate < args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
