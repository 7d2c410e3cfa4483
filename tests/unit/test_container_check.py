"""The preflight: every way an image can fail to run the code gives one clear error, and
the launcher's entry point pins, checks and tolerates what a dry run may tolerate."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from test_container_render import DIGEST, FakeRunner, make_spec

import hpcorch
from hpcorch.cli import main as cli_main
from hpcorch.containers import ContainerError, load_settings, make_runtime, prepare_container
from hpcorch.containers.base import ImageIdentity
from hpcorch.containers.check import check_argv, code_hashes, run_check
from hpcorch.containers.inside import inside_report, os_release

IDENTITY = ImageIdentity("podman", "hpcorch:latest", DIGEST, DIGEST)


def probe(**changes: object) -> str:
    """The probe's line from an image built from this very hpcorch, without MPI."""
    data: dict[str, object] = {"mpi4py": "", "libmpi": "",
                               "hpcorch_files": code_hashes(str(Path(hpcorch.__file__).parent))}
    data.update(changes)
    return json.dumps(data) + "\n"


def report(probe_line: str | None = None, **changes: object) -> str:
    """What the in-image run prints: the probe's line, then the check's report."""
    data = {"python": "3.11.2", "executable": "/opt/hpcorch/bin/python",
            "hpcorch": hpcorch.__version__, "os_release": "Debian GNU/Linux 12 (bookworm)",
            "app": "", "app_ok": None, "app_error": ""}
    data.update(changes)
    return (probe() if probe_line is None else probe_line) + "some log line\n" \
        + json.dumps(data) + "\n"


def check(runner: FakeRunner, app: str | None = None):  # type: ignore[no-untyped-def]
    settings = load_settings({"name": "podman", "image": "hpcorch:latest"})
    return run_check(make_runtime(settings, runner), IDENTITY, app=app, workdir="/w",
                     runner=runner)


def test_a_good_image_reports_versions_and_the_command_it_ran() -> None:
    runner = FakeRunner(stdout=report(app="/w/train.py", app_ok=True))
    result = check(runner, app="/w/train.py")
    assert result.python == "3.11.2" and result.hpcorch == hpcorch.__version__
    argv = runner.calls[0]
    assert argv[:2] == ["podman", "run"] and "--network" in argv and DIGEST in argv
    assert argv[-len(check_argv("python", "/w/train.py")):] == list(
        check_argv("python", "/w/train.py"))
    assert any("imports" in line for line in result.lines())
    assert "mpi       no MPI (neither mpi4py nor libmpi)" in result.lines()


def test_an_image_with_other_hpcorch_code_of_the_same_version_is_refused() -> None:
    """A stale image (built before hpcorch's code changed) has the same version: refused,
    naming the files, before any run fails in it."""
    files = code_hashes(str(Path(hpcorch.__file__).parent))
    files["spec.py"] = "0" * 64
    del files["errors.py"]
    with pytest.raises(ContainerError) as err:
        check(FakeRunner(stdout=report(probe(hpcorch_files=files))))
    text = str(err.value)
    assert "holds other hpcorch code than the submitting side" in text
    assert "2 file(s) differ (errors.py, spec.py)" in text and "containers/build.sh" in text


class HostRuntime:
    """A "runtime" that runs the command on this machine: the in-image half for real."""

    name = "podman"

    def argv(self, run, identity):  # type: ignore[no-untyped-def]
        return list(run.argv)


def test_the_whole_in_image_command_run_by_a_real_interpreter(tmp_path: Path) -> None:
    """check_argv's one command (probe, then `hpcorch container check --inside`) with this
    interpreter: both halves answer, the code hashes agree, the venv's mpi4py is seen."""
    app = tmp_path / "app.py"
    app.write_text("import json\n")
    result = run_check(HostRuntime(), IDENTITY, python=sys.executable, app=str(app),
                       workdir=str(tmp_path))
    assert result.hpcorch == hpcorch.__version__ and result.app_ok is True
    assert result.executable == sys.executable
    assert result.mpi.present == (importlib.util.find_spec("mpi4py") is not None)


@pytest.mark.parametrize("rc, stdout, stderr, fragment", [
    (127, "", 'Error: runc: exec: "python": executable file not found in $PATH',
     "has no `python`"),
    (1, "", "ERROR (catatonit:6): failed to exec pid1: No such file or directory",
     "has no `python`"),
    (1, "", "/usr/bin/python: No module named hpcorch", "has Python but not hpcorch"),
    (0, report(hpcorch="0.0.1"), "", "has hpcorch 0.0.1, the submitting side has"),
    (1, report(app="/w/train.py", app_ok=False, app_error="ModuleNotFoundError: No module "
                                                          "named 'torch'"), "",
     "does not import inside the image: ModuleNotFoundError"),
    (139, "", "Segmentation fault", "failed in image"),
])
def test_each_failure_is_one_clear_error(rc: int, stdout: str, stderr: str,
                                         fragment: str) -> None:
    with pytest.raises(ContainerError, match="hpcorch:latest") as err:
        check(FakeRunner(rc=rc, stdout=stdout, stderr=stderr), app="/w/train.py")
    assert fragment in str(err.value)


class ScriptedRunner:
    """Answers image inspect, then the in-image check."""

    def __init__(self, check_stdout: str) -> None:
        self.calls: list[list[str]] = []
        self.check_stdout = check_stdout

    def __call__(self, argv: Sequence[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[1:3] == ["image", "inspect"]:
            return subprocess.CompletedProcess(argv, 0, DIGEST.removeprefix("sha256:") + " []",
                                               "")
        return subprocess.CompletedProcess(argv, 0, self.check_stdout, "")


def test_prepare_pins_and_checks_once() -> None:
    runner = ScriptedRunner(report())
    ctx = prepare_container({"name": "podman", "image": "hpcorch:latest"}, workdir="/w",
                            runner=runner, which=lambda _: "/usr/bin/podman")
    assert ctx.image == DIGEST and ctx.report is not None
    assert [c[1] for c in runner.calls] == ["image", "run"]  # one container start
    assert ctx.wrap(make_spec()).image == DIGEST


def test_prepare_refuses_before_submission_when_the_runtime_is_missing() -> None:
    with pytest.raises(ContainerError, match="not found on PATH"):
        prepare_container({"name": "podman", "image": "x"}, which=lambda _: None)


def test_prepare_refuses_missing_declared_data(tmp_path: Path) -> None:
    runner = ScriptedRunner(report())
    with pytest.raises(ContainerError, match=r"container.data\[0\]='/nonexistent/data'"):
        prepare_container({"name": "podman", "image": "x", "data": ["/nonexistent/data"]},
                          runner=runner, which=lambda _: "/usr/bin/podman")


def test_dry_run_renders_without_runtime_or_image() -> None:
    ctx = prepare_container({"name": "apptainer", "image": "/nowhere/img.sif"}, dry_run=True,
                            which=lambda _: None)
    assert ctx.image is None and ctx.identity is not None and not ctx.identity.pinned
    wrapped = ctx.wrap(make_spec())
    assert wrapped.command[:2] == ("apptainer", "exec") and "/nowhere/img.sif" in wrapped.command


def test_no_container_does_nothing() -> None:
    ctx = prepare_container(None, which=lambda _: pytest.fail("no lookup expected"))
    assert ctx.image is None and ctx.runtime is None


def test_inside_report_imports_the_app(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("import json\nif __name__ == '__main__':\n    raise SystemExit(9)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import surely_not_installed_anywhere\n")
    ok = inside_report(str(good))
    assert ok["app_ok"] is True and ok["executable"] == sys.executable
    broken = inside_report(str(bad))
    assert broken["app_ok"] is False and "surely_not_installed_anywhere" in broken["app_error"]


def test_cli_inside_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["container", "check", "--inside", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hpcorch"] == hpcorch.__version__ and data["app_ok"] is None


def test_cli_outside_reports_a_missing_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["container", "check", "--executable", "/nonexistent/podman"])
    assert code == 2
    assert "'/nonexistent/podman' not found on PATH" in capsys.readouterr().err


def test_os_release_parsing(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n# c\n\n')
    assert os_release(str(path)) == {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
                                     "ID": "debian"}
    assert os_release(str(tmp_path / "missing")) == {}
