"""The `hpcorch` command line: look at sweeps and runs, follow, resume and cancel them.

    hpcorch sweeps                 every sweep in the index
    hpcorch status [SWEEP]         a table of a sweep's runs (--json for machines)
    hpcorch show RUN               one run's whole record, fingerprint included
    hpcorch logs RUN               a run's stdout, stderr and job log
    hpcorch rebuild [DIR ...]      recreate the index from the run directories
    hpcorch wait SWEEP             block until a sweep finishes
    hpcorch resume SWEEP           submit again what did not succeed
    hpcorch cancel SWEEP           stop a sweep's unfinished runs
    hpcorch baseline save|check    reference metrics; check exits 1 on drift
    hpcorch compare A B            two sweeps run by run (matched by run key)
    hpcorch verify SWEEP           re-run runs and require identical metrics
    hpcorch diff RUN_A RUN_B       what differs between two runs' configs and environments
    hpcorch pipeline run FILE      a multi-stage pipeline (status/wait/resume/cancel take it too)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hpcorch import __version__
from hpcorch.cli import (
    container_cmds,
    inspect_cmds,
    lifecycle_cmds,
    pipeline_cmds,
    repro_cmds,
)
from hpcorch.errors import HpcorchError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="hpcorch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hpcorch {__version__}")
    parser.add_argument("--home", help="index directory (default: $HPCORCH_HOME or ./.hpcorch)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect_cmds.register(sub)
    lifecycle_cmds.register(sub)
    repro_cmds.register(sub)
    container_cmds.register(sub)
    pipeline_cmds.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "overrides", None) is not None:
        # `pipeline run FILE --dir D train.lr=1`: overrides after an option are overrides too
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except HpcorchError as exc:
        print(f"hpcorch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
