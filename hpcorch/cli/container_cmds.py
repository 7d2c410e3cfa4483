"""`hpcorch container check`: can this image run the research code?

    hpcorch container check [--runtime podman] [--image hpcorch:latest] [--app train.py]

resolves the image to its digest, runs the check inside it and prints the
Python and hpcorch versions it found (hpcorch must match this side's) and
whether the app imports; exit status 2 with one clear error otherwise.
`--inside` is the half that runs in the image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from hpcorch.containers.inside import inside_report


def cmd_check(args: argparse.Namespace) -> int:
    """Outside: pin the image and check it. Inside (--inside): report this environment."""
    if args.inside:
        here = inside_report(args.app)
        if args.json:
            print(json.dumps(here, sort_keys=True))
        else:
            for key, value in here.items():
                print(f"{key:11} {value}")
        return 0 if here["app_ok"] in (None, True) else 1

    from hpcorch.containers import load_settings, make_runtime
    from hpcorch.containers.check import run_check

    settings = load_settings({"name": args.runtime, "image": args.image, "python": args.python,
                              "executable": args.executable})
    if settings.name == "none":
        print("container=none: runs execute directly, nothing to check")
        return 0
    runtime = make_runtime(settings)
    runtime.check()
    assert settings.image is not None
    identity = runtime.resolve(settings.image)
    app = os.path.abspath(args.app) if args.app else None
    report = run_check(runtime, identity, python=settings.python, app=app, workdir=os.getcwd())
    if args.json:
        print(json.dumps(dataclasses.asdict(report), sort_keys=True))
    else:
        print("\n".join(report.lines()))
        print("ok: the image can run this code")
    return 0


def register(sub: Any) -> None:
    """Add `hpcorch container ...` to the CLI."""
    group = sub.add_parser("container", help="container images: check one can run the code")
    commands = group.add_subparsers(dest="container_command", required=True, metavar="COMMAND")
    p = commands.add_parser("check", help="run a preflight inside the image")
    p.add_argument("--runtime", default="podman",
                   choices=["none", "podman", "docker", "apptainer"])
    p.add_argument("--image", default="hpcorch:latest",
                   help="image reference (podman/docker) or .sif path (default: hpcorch:latest)")
    p.add_argument("--app", help="the research code's script to import inside (e.g. train.py)")
    p.add_argument("--python", default="python", help="the interpreter inside the image")
    p.add_argument("--executable", default=None, help="the runtime's binary (default: RUNTIME)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--inside", action="store_true",
                   help="report the environment this process runs in (used inside the image)")
    p.set_defaults(func=cmd_check)
