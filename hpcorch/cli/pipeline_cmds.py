"""`hpcorch pipeline run FILE [STAGE.key=value ...]` and the verbs on a pipeline.

    hpcorch pipeline run conf/pipeline/example.yaml train.lr=1e-3,1e-4 train.provider=slurm
    hpcorch pipeline run conf/pipeline/example.yaml --dry-run   # graph + every stage's scripts
    hpcorch pipeline run conf/pipeline/example.yaml --detach    # a background driver owns it
    hpcorch status|wait|resume|cancel PIPELINE                  # its directory, or its name

PIPELINE is the pipeline's directory (`pipelines/<name>` unless the file says `dir:`)
or its name.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from hpcorch.jobenv import HOME_ENV
from hpcorch.orchestrate.detach import orchestrator_alive, orchestrator_pid_path, start_background
from hpcorch.orchestrate.pipeline.config import PipelineConfig, pipeline_from
from hpcorch.orchestrate.pipeline.driver import PipelineDriver, stage_dir
from hpcorch.orchestrate.pipeline.plan import plan_pipeline
from hpcorch.orchestrate.pipeline.state import (
    pipeline_status,
    read_pipeline_file,
    read_pipeline_ledger,
    write_pipeline_ledger,
)
from hpcorch.store.index import open_index
from hpcorch.store.ledger import read_ledger


def _env(args: argparse.Namespace) -> dict[str, str]:
    """What every stage's process gets: the index home the user chose."""
    return {HOME_ENV: os.path.abspath(os.path.expanduser(args.home))} if args.home else {}


def _drive(config: PipelineConfig, args: argparse.Namespace, *, dry_run: bool = False) -> int:
    started = time.perf_counter()
    plan = plan_pipeline(config)
    total = sum(len(r) for r in plan.runs.values())
    print(f"hpcorch: pipeline {config.name}: {total} run(s) in {len(config.stages)} stage(s) "
          f"planned in {time.perf_counter() - started:.2f}s ({config.directory})",
          file=sys.stderr, flush=True)
    if not dry_run:
        owner = orchestrator_alive(config.directory)
        if owner is not None and owner not in (os.getpid(), os.getppid()):
            print(f"hpcorch: pipeline {config.name} is being run by process {owner}; "
                  f"`hpcorch wait {config.directory}` follows it", file=sys.stderr)
            return 1
        orchestrator_pid_path(config.directory).parent.mkdir(parents=True, exist_ok=True)
        orchestrator_pid_path(config.directory).write_text(f"{os.getpid()}\n")
    return PipelineDriver(plan, env=_env(args), dry_run=dry_run).run()


def cmd_run(args: argparse.Namespace) -> int:
    """Plan and run (or render, or detach) a pipeline file."""
    raw = read_pipeline_file(args.file)
    config = pipeline_from(raw, args.overrides, source=os.path.abspath(args.file),
                           directory=args.dir)
    if args.dry_run:
        return _drive(config, args, dry_run=True)
    write_pipeline_ledger(config, raw)
    if args.detach:
        home = ["--home", args.home] if args.home else []
        pid = start_background(config.directory, os.getcwd(),
                               [*home, "resume", config.directory])
        ref = config.directory
        print(f"pipeline {config.name} started in the background (pid {pid}), detached.\n"
              f"  hpcorch status {ref}\n  hpcorch wait {ref}\n  hpcorch resume {ref}\n"
              f"  hpcorch cancel {ref}", file=sys.stderr, flush=True)
        return 0
    return _drive(config, args)


def resume(args: argparse.Namespace) -> int:
    """Run the pipeline again from its ledger: only what did not succeed (and what
    consumes it) runs; in-flight runs are found again, never submitted twice."""
    ledger = read_pipeline_ledger(args.sweep)
    if ledger.cwd:
        os.chdir(ledger.cwd)  # the stages' apps are named relative to where it started
    return _drive(ledger.config(), args)


def status(args: argparse.Namespace) -> int:
    """Per stage: planned runs and their states; exit 3 if any run did not succeed."""
    ledger = read_pipeline_ledger(args.sweep)
    rows, pid = pipeline_status(ledger, open_index(args.home))
    if getattr(args, "json", False):
        print(json.dumps({"pipeline": ledger.directory, "driver_pid": pid, "stages": rows},
                         indent=1))
    else:
        print(f"pipeline {ledger.raw.get('name') or os.path.basename(ledger.directory)} "
              f"({ledger.directory}): " + (f"running (driver pid {pid})" if pid else
                                           "no driver running"))
        for row in rows:
            needs = ", ".join(f"{k} [{v}]" for k, v in row["needs"].items())
            states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(row["states"].items()))
            print(f"  {row['stage']:<12} {row['runs']:>6} run(s)  {states}"
                  + (f"  <- {needs}" if needs else ""))
    done = all(set(r["states"]) <= {"SUCCEEDED", "SKIPPED"} for r in rows)
    return 0 if done else 3


def wait(args: argparse.Namespace) -> int:
    """Block until the pipeline's driver has ended; then its status (exit 3 on failures)."""
    ledger = read_pipeline_ledger(args.sweep)
    deadline = time.monotonic() + args.timeout if getattr(args, "timeout", 0) else None
    while orchestrator_alive(ledger.directory):
        if deadline and time.monotonic() > deadline:
            print(f"hpcorch: still running after {args.timeout}s", file=sys.stderr)
            return 4
        time.sleep(0.5)
    return status(args)


def cancel(args: argparse.Namespace) -> int:
    """Stop the driver (its running stage cancels and records its open runs), then
    cancel what any stage still has in flight on its engine."""
    from hpcorch.cli import lifecycle_cmds

    ledger = read_pipeline_ledger(args.sweep)
    owner = orchestrator_alive(ledger.directory)
    if owner is not None:
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + 300
        while orchestrator_alive(ledger.directory) and time.monotonic() < deadline:
            time.sleep(0.2)
    for stage in ledger.config().stages:
        directory = stage_dir(ledger.config(), stage.name)
        if read_ledger(directory) is not None:
            lifecycle_cmds.cmd_cancel(argparse.Namespace(sweep=directory, home=args.home))
    return 0


def register(sub: Any) -> None:
    """Add `hpcorch pipeline ...` to the CLI."""
    p = sub.add_parser("pipeline", help="run a multi-stage pipeline (prepare -> train -> ...)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    run = verbs.add_parser("run", help="plan and run a pipeline file")
    run.add_argument("file", help="the pipeline's YAML file (e.g. conf/pipeline/example.yaml)")
    run.add_argument("overrides", nargs="*", help="stage-scoped overrides: STAGE.key=value")
    run.add_argument("--dry-run", action="store_true",
                     help="print the graph and every stage's scripts; submit nothing")
    run.add_argument("--detach", action="store_true", help="return once a background driver "
                     "owns the pipeline")
    run.add_argument("--dir", help="the pipeline's directory (default: the file's `dir:`, "
                     "else pipelines/<name>)")
    run.set_defaults(func=cmd_run)
    for name, func in (("status", status), ("wait", wait), ("resume", resume),
                       ("cancel", cancel)):
        q = verbs.add_parser(name, help=f"{name} a pipeline (as `hpcorch {name} PIPELINE`)")
        q.add_argument("sweep", metavar="PIPELINE", help="the pipeline's directory or name")
        if name == "wait":
            q.add_argument("--timeout", type=float, default=0)
        if name == "status":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)

