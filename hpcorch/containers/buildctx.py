"""The build context of the hpcorch image, made on the host so the build needs no network.

    python -m hpcorch.containers.buildctx OUT_DIR [--root REPO] [--requirements FILE]

writes into OUT_DIR:
- `wheels/`: a wheel of every dependency of hpcorch and of the research code
  (containers/requirements.txt), pinned to the versions installed in the
  submitting interpreter, plus `wheels/bootstrap/pip.whl` that installs them;
  the wheels stay cached between builds, only missing ones are fetched;
- `wheels/requirements.txt`: those pins;
- `dist/hpcorch-<version>-py3-none-any.whl`: hpcorch itself, built here from
  the source tree byte for byte reproducibly (fixed timestamps, sorted
  entries), so an unchanged tree gives an unchanged layer;
- `context.hash`: a hash of all of it and of the Dockerfile; the image carries it
  as a label, which is how scripts/podman-up.sh knows whether to rebuild.

Pinning to the host's versions is what makes a sweep inside the image give the
same metrics as the same sweep outside it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from hpcorch.errors import HpcorchError

#: Directories (relative to the repository root) whose files go into the hpcorch wheel.
PACKAGE_ROOTS: tuple[tuple[str, str], ...] = (("hpcorch", "hpcorch"),
                                               ("launchers/hydra_plugins", "hydra_plugins"))
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP = re.compile(r"(__pycache__|\.pyc$|\.pyo$|~$|\.swp$)")


class BuildContextError(HpcorchError):
    """The build context cannot be made (a wheel is missing, pip failed)."""


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(requirements: Iterable[str]) -> list[str]:
    """`name==version` for the closure of `requirements`, as installed in this interpreter.

    Requirements that are not installed here are kept as written (pip resolves them).
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:  # not installed on its own: pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]

    pins: dict[str, str] = {}
    unpinned: list[str] = []
    todo: list[Requirement] = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _canon(req.name)
        if key in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            unpinned.append(str(req))
            continue
        pins[key] = f"{key}=={dist.version}"
        todo += [Requirement(r) for r in dist.requires or ()]
    return sorted(pins.values()) + sorted(set(unpinned))


def read_requirements(path: Path | None) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    if path is None or not path.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _pip(python: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True,
                          check=False)


def fetch_wheels(wheels: Path, pins: Sequence[str], python: str = sys.executable) -> None:
    """Make sure `wheels` holds a wheel for every pin (offline first, then the index)."""
    wheels.mkdir(parents=True, exist_ok=True)
    req = wheels / "requirements.txt"
    req.write_text("\n".join(pins) + "\n")
    common = ["wheel", "--disable-pip-version-check", "-q", "-w", str(wheels),
              "--find-links", str(wheels), "-r", str(req)]
    have = {_wheel_key(p) for p in wheels.glob("*.whl")}
    complete = all("==" in p and tuple(p.split("==", 1)) in have for p in pins)
    if not complete and _pip(python, ["--no-index", *common]).returncode != 0:
        online = _pip(python, common)
        if online.returncode != 0:
            raise BuildContextError(f"pip wheel failed for {req}: {online.stderr.strip()[-800:]}")
    _prune(wheels, pins)
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheels:
        raise BuildContextError(f"no pip wheel in {wheels}: pins must include pip")
    (wheels / "bootstrap").mkdir(exist_ok=True)
    shutil.copyfile(pip_wheels[-1], wheels / "bootstrap" / "pip.whl")


def _wheel_key(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return _canon(name), version


def _prune(wheels: Path, pins: Sequence[str]) -> None:
    """Drop cached wheels of versions no longer pinned (they would bloat the image layer)."""
    wanted = {tuple(p.split("==", 1)) for p in pins if "==" in p}
    for path in wheels.glob("*.whl"):
        if _wheel_key(path) not in wanted:
            path.unlink()


def _source_files(root: Path) -> list[tuple[Path, str]]:
    """(file, path inside the wheel) of every packaged source file, sorted."""
    found = []
    for source, target in PACKAGE_ROOTS:
        base = root / source
        for path in base.rglob("*"):
            if path.is_file() and not _SKIP.search(str(path.relative_to(base))):
                found.append((path, f"{target}/{path.relative_to(base).as_posix()}"))
    return sorted(found, key=lambda item: item[1])


def _project(root: Path) -> dict[str, object]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _metadata_text(project: dict[str, object]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}", f"Summary: {project.get('description', '')}",
             f"Requires-Python: {project.get('requires-python', '>=3.10')}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]  # type: ignore[attr-defined]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    for extra, deps in sorted(extras.items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {dep}; extra == "{extra}"' for dep in deps]
    return "\n".join(lines) + "\n"


def build_hpcorch_wheel(root: Path, out_dir: Path) -> Path:
    """A reproducible pure-Python wheel of the source tree at `root` (no setuptools needed)."""
    project = _project(root)
    name, version = str(project["name"]), str(project["version"])
    info = f"{name}-{version}.dist-info"
    scripts: dict[str, str] = project.get("scripts", {})  # type: ignore[assignment]
    entries: list[tuple[str, bytes]] = [
        (arc, path.read_bytes()) for path, arc in _source_files(root)]
    entries += [
        (f"{info}/METADATA", _metadata_text(project).encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: hpcorch.containers.buildctx\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{info}/entry_points.txt", ("[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in sorted(scripts.items()))).encode()),
        (f"{info}/top_level.txt", b"hpcorch\nhydra_plugins\n"),
    ]
    record = io.StringIO()
    for arc, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{arc},sha256={digest},{len(data)}\n")
    record.write(f"{info}/RECORD,,\n")
    entries.append((f"{info}/RECORD", record.getvalue().encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.whl"):
        old.unlink()
    target = out_dir / f"{name}-{version}-py3-none-any.whl"
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for arc, data in entries:
            item = zipfile.ZipInfo(arc, date_time=_ZIP_DATE)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(item, data)
    os.replace(tmp, target)
    return target


def context_hash(out_dir: Path, dockerfile: Path) -> str:
    """A hash of everything the image is built from (files of the context + the Dockerfile)."""
    digest = hashlib.sha256(dockerfile.read_bytes())
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "context.hash"):
        digest.update(path.relative_to(out_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def make_context(root: Path, out_dir: Path, requirements: Path | None = None,
                 python: str = sys.executable) -> str:
    """Write the whole build context into `out_dir`; returns its hash."""
    pip_version = metadata.version("pip")
    deps: list[str] = list(_project(root).get("dependencies", []))  # type: ignore[call-overload]
    pins = requirement_pins([*deps, *read_requirements(requirements)])
    pins = sorted({*pins, f"pip=={pip_version}"})
    fetch_wheels(out_dir / "wheels", pins, python)
    build_hpcorch_wheel(root, out_dir / "dist")
    value = context_hash(out_dir, root / "containers" / "Dockerfile")
    (out_dir / "context.hash").write_text(value + "\n")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: make the context, print its hash."""
    parser = argparse.ArgumentParser(prog="python -m hpcorch.containers.buildctx",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the hpcorch source tree (default: this checkout)")
    parser.add_argument("--requirements", type=Path, default=None,
                        help="the research code's requirements (default: ROOT/containers/"
                             "requirements.txt)")
    args = parser.parse_args(argv)
    requirements = args.requirements or args.root / "containers" / "requirements.txt"
    try:
        print(make_context(args.root, args.out_dir, requirements))
    except HpcorchError as exc:
        print(f"buildctx: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
