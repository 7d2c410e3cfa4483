"""Launch wrappers: which launcher, which flags (only where they apply), inside-out composition."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError, ProviderUnavailable
from hpcorch.jobenv import PROVIDER_ENV
from hpcorch.launch import (
    RANK_ENV_NAMES,
    RANK_ENV_PREFIXES,
    Launcher,
    LaunchOptions,
    Placement,
    choose_launcher,
    launch_argv,
    loopback,
    mpirun_argv,
    parse_report,
    preflight,
    slurm_allocation_args,
    srun_argv,
    wrap,
)
from hpcorch.launch.wrappers import LOOPBACK_MCA
from hpcorch.providers.local import LocalProvider, LocalSettings
from hpcorch.providers.mpi import MpiProvider
from hpcorch.settings import parse_settings
from hpcorch.spec import Resources
from hpcorch.testing import contract_spec

CMD = ("python", "train.py", "lr=0.1", "hydra.run.dir=/runs/0")


# -- Resources: ranks as a resource ------------------------------------------------
@pytest.mark.parametrize(("given", "tasks", "per_node", "counts"), [
    ({}, 1, 1, (1,)),
    ({"tasks": 4}, 4, 4, (4,)),
    ({"nodes": 2, "tasks": 8}, 8, 4, (4, 4)),
    ({"nodes": 2, "tasks": 3}, 3, 2, (2, 1)),
    ({"nodes": 2, "tasks_per_node": 4}, 8, 4, (4, 4)),
    ({"nodes": 3, "tasks": 4, "tasks_per_node": 2}, 4, 2, (2, 1, 1)),
])
def test_resources_tasks(given: dict[str, int], tasks: int, per_node: int,
                         counts: tuple[int, ...]) -> None:
    res = parse_settings(Resources, given, "resources")
    assert (res.tasks, res.tasks_per_node, res.ranks_per_node()) == (tasks, per_node, counts)
    assert Resources(**{f: getattr(res, f) for f in res.__dataclass_fields__}) == res


@pytest.mark.parametrize(("given", "key"), [
    ({"tasks": -1}, "resources.tasks"),
    ({"nodes": 0}, "resources.nodes"),
    ({"nodes": 3, "tasks": 2}, "resources.tasks"),
    ({"tasks": 5, "tasks_per_node": 2}, "resources.tasks"),
    ({"gpus": -1}, "resources.gpus"),
])
def test_resources_refuse_inconsistent_counts(given: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(Resources, given, "resources")
    assert err.value.key == key


# -- choosing the launcher ---------------------------------------------------------
SRUN = LaunchOptions("slurm", multi_rank=Launcher.SRUN)  # what a Slurm array task passes


@pytest.mark.parametrize(("options", "tasks", "launcher"), [
    (LaunchOptions("local"), 1, Launcher.DIRECT), (LaunchOptions("local"), 2, Launcher.MPIRUN),
    (SRUN, 1, Launcher.DIRECT), (SRUN, 4, Launcher.SRUN),
    (LaunchOptions("x", single_rank=Launcher.MPIRUN), 1, Launcher.MPIRUN),
    (LaunchOptions("x", single_rank=Launcher.MPIRUN), 4, Launcher.MPIRUN),
])
def test_choose_launcher(options: LaunchOptions, tasks: int, launcher: Launcher) -> None:
    assert choose_launcher(Resources(tasks=tasks), options) is launcher


@pytest.mark.parametrize(("provider", "tasks", "launcher"), [
    (LocalProvider, 1, Launcher.DIRECT), (LocalProvider, 2, Launcher.MPIRUN),
    (MpiProvider, 1, Launcher.MPIRUN), (MpiProvider, 4, Launcher.MPIRUN),
])
def test_providers_declare_their_launchers(provider: type, tasks: int,
                                           launcher: Launcher) -> None:
    """The launcher follows the provider's Capabilities, as before it followed its name;
    the name itself is only a label (any name, same launcher)."""
    caps = provider.capabilities
    assert caps.launcher_for(tasks) is launcher
    options = LaunchOptions("any name", multi_rank=caps.multi_rank, single_rank=caps.single_rank)
    assert choose_launcher(Resources(tasks=tasks), options) is launcher


def test_launch_options_new_fields_are_keyword_only() -> None:
    """`LaunchOptions.here(name, ...)` and `LaunchOptions(name, ...)` calls still construct."""
    with pytest.raises(TypeError):
        LaunchOptions("p", False, None, None, None, "mpirun", "srun", "pmix", "none", None, (),
                      (), False, "py", None, Launcher.SRUN)  # type: ignore[misc]
    assert LaunchOptions.here("p", multi_rank=Launcher.SRUN).multi_rank is Launcher.SRUN


def test_an_unnamed_provider_exports_no_empty_provider_variable() -> None:
    assert not any(a.startswith(PROVIDER_ENV) for a in
                   mpirun_argv(Resources(tasks=2), LaunchOptions()))
    assert f"{PROVIDER_ENV}=p" in mpirun_argv(Resources(tasks=2), LaunchOptions("p"))
    assert srun_argv(Resources(tasks=2), LaunchOptions())[-1] == "--export=ALL"


def test_rank_variables_for_containers() -> None:
    """What a run in a container needs from mpirun/PMIx: the launch layer names them."""
    assert RANK_ENV_PREFIXES == ("OMPI_", "PMIX_", "PMI_")
    assert set(RANK_ENV_NAMES) == {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                   "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK", "PMIX_NAMESPACE"}
    assert all(n.startswith(RANK_ENV_PREFIXES) for n in RANK_ENV_NAMES)


def test_direct_is_the_command_itself() -> None:
    assert wrap(CMD, Resources(), LaunchOptions("local", as_root=True, slots=2)) == list(CMD)


# -- mpirun ------------------------------------------------------------------------
def test_mpirun_on_this_machine() -> None:
    argv = wrap(CMD, Resources(tasks=2), LaunchOptions("local", slots=2, output_dir="/r/ranks"),
                env_names=["EXTRA"])
    assert argv == ["mpirun", "-n", "2", "--bind-to", "none", *LOOPBACK_MCA,
                    "--output-filename", "/r/ranks",
                    "-x", "HPCORCH_SPEC", "-x", "HPCORCH_SEED", "-x", "PYTHONHASHSEED",
                    "-x", "EXTRA", "-x", "HPCORCH_PROVIDER=local", *CMD]


@pytest.mark.parametrize(("as_root", "tasks", "slots", "root_flag", "over_flag"), [
    (False, 2, 2, False, False),
    (True, 2, 2, True, False),
    (False, 4, 2, False, True),
    (True, 4, 2, True, True),
    (False, 4, None, False, False),  # slots unknown: leave it to mpirun
])
def test_mpirun_flags_only_when_they_apply(as_root: bool, tasks: int, slots: int | None,
                                           root_flag: bool, over_flag: bool) -> None:
    argv = mpirun_argv(Resources(tasks=tasks), LaunchOptions("local", as_root=as_root,
                                                             slots=slots))
    assert ("--allow-run-as-root" in argv) is root_flag
    assert ("--oversubscribe" in argv) is over_flag
    assert "mpi_yield_when_idle" not in argv


def test_mpirun_yields_when_declared_slots_exceed_local_cores() -> None:
    placed = Placement((("localhost", 4),))
    assert "mpi_yield_when_idle" in mpirun_argv(
        Resources(tasks=4), LaunchOptions("mpi", placement=placed, cores=2))
    assert "mpi_yield_when_idle" not in mpirun_argv(
        Resources(tasks=4), LaunchOptions("mpi", placement=placed, cores=4))


def test_mpirun_on_placed_hosts() -> None:
    placed = Placement((("gpu01", 2), ("gpu02", 2)), (("0", "1"), ("2", "3")))
    argv = wrap(CMD, Resources(nodes=2, tasks=4, gpus=2),
                LaunchOptions("mpi", placement=placed, python="/venv/bin/python",
                              mpirun_args=("--mca", "pml", "ucx"), export=("PATH",)))
    assert argv[:7] == ["mpirun", "-n", "4", "--host", "gpu01:2,gpu02:2", "--map-by", "slot"]
    assert "--mca" in argv and "self,vader" not in argv  # remote hosts: no loopback transport
    assert argv[argv.index("PATH") - 1] == "-x"
    tail = argv[argv.index("HPCORCH_PROVIDER=mpi") + 1:]
    assert tail == ["--mca", "pml", "ucx", "/venv/bin/python", "-m", "hpcorch.worker.ranks",
                    "--gpus", "2", "--rank-devices", "0;1;2;3", "--", *CMD]


# -- the loopback bind shim (single-host mpirun) ------------------------------------
def test_single_host_mpirun_preloads_the_bind_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libuser.so")
    opts = LaunchOptions("local", bind_shim="/c/hpcorch-loopback-x.so")
    argv = mpirun_argv(Resources(tasks=2), opts)
    assert argv[:3] == ["env", "LD_PRELOAD=/c/hpcorch-loopback-x.so:/usr/lib/libuser.so",
                        "mpirun"]
    local = Placement((("localhost", 2),))
    assert mpirun_argv(Resources(tasks=2), replace(opts, provider="mpi", placement=local))[0] \
        == "env"
    remote = Placement((("gpu01", 1), ("gpu02", 1)))
    assert mpirun_argv(Resources(nodes=2, tasks=2),
                       replace(opts, provider="mpi", placement=remote))[0] == "mpirun"
    assert mpirun_argv(Resources(tasks=2), LaunchOptions("local"))[0] == "mpirun"


def test_launch_argv_fills_in_the_shim_for_single_host_mpirun_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(loopback, "shim", lambda: asked.append(1) or "/c/hpcorch-loopback.so")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    one = contract_spec(tmp_path, 0)
    two = replace(one, resources=Resources(tasks=2))
    assert launch_argv(one, LaunchOptions("local")) == list(one.command) and not asked
    assert launch_argv(two, LaunchOptions("local"))[:2] == ["env",
                                                            "LD_PRELOAD=/c/hpcorch-loopback.so"]
    remote = Placement((("gpu01", 1), ("gpu02", 1)))
    asked.clear()
    argv = launch_argv(replace(two, resources=Resources(nodes=2, tasks=2)),
                       LaunchOptions("mpi", placement=remote))
    assert argv[0] == "mpirun" and not asked


def test_preload_value_keeps_the_users_libraries_once() -> None:
    assert loopback.preload_value("/c/hpcorch-loopback-1.so", "") == "/c/hpcorch-loopback-1.so"
    assert loopback.preload_value("/c/hpcorch-loopback-2.so", "/a.so:/c/hpcorch-loopback-1.so") \
        == "/c/hpcorch-loopback-2.so:/a.so"


def test_shim_build_without_a_compiler_says_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OSError, match="no C compiler"):
        loopback.build(tmp_path)
    failed = subprocess.CompletedProcess(["cc"], 1, "", "cc: error: bad")
    with pytest.raises(OSError, match="cc rc=1: cc: error: bad"):
        loopback.build(tmp_path, runner=lambda argv, **_: failed, compiler="cc")
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_shim_build_is_atomic_and_reused(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_cc(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        Path(argv[argv.index("-o") + 1]).write_bytes(b"ELF")
        return subprocess.CompletedProcess(argv, 0, "", "")

    built = loopback.build(tmp_path, runner=fake_cc, compiler="cc")
    assert built == loopback.library_path(tmp_path) and built.read_bytes() == b"ELF"
    assert loopback.build(tmp_path, runner=fake_cc, compiler="cc") == built
    assert len(calls) == 1 and [p.name for p in tmp_path.iterdir()] == [built.name]


def test_placement_shares_devices_by_local_rank() -> None:
    assert Placement((("a", 2),), (("0", "1", "2", "3"),)).rank_devices() == ("0,1", "2,3")
    assert Placement((("a", 3),), (("5",),)).rank_devices() == ("5", "5", "5")
    assert Placement((("a", 2), ("b", 1)), (("0", "1"), ("3",))).rank_hosts() == ("a", "a", "b")


def test_wrappers_compose_inside_out_around_a_container() -> None:
    container = ["apptainer", "exec", "img.sif", *CMD]
    argv = wrap(container, Resources(tasks=2, gpus=2), replace(SRUN, python="py"))
    shim = ["py", "-m", "hpcorch.worker.ranks", "--gpus", "2", "--"]
    assert argv[0] == "srun"
    assert argv[-len(container) - len(shim):] == [*shim, *container]


# -- srun ----------------------------------------------------------------------------
def test_srun_inside_an_allocation() -> None:
    argv = srun_argv(Resources(tasks=2, cpus=1), LaunchOptions("slurm"))
    assert argv == ["srun", "--mpi=pmix", "--nodes=1", "--ntasks=2", "--cpus-per-task=1",
                    "--kill-on-bad-exit=1", "--export=ALL,HPCORCH_PROVIDER=slurm"]


def test_srun_multi_node_and_overcommit_only_when_needed() -> None:
    res = Resources(nodes=2, tasks=8, cpus=1)
    assert "--ntasks-per-node=4" in srun_argv(res, LaunchOptions("slurm"))
    assert "--overcommit" not in srun_argv(res, LaunchOptions("slurm", slots=4))
    assert "--overcommit" in srun_argv(res, LaunchOptions("slurm", slots=2))
    uneven = srun_argv(Resources(nodes=2, tasks=3), LaunchOptions("slurm"))
    assert not any(a.startswith("--ntasks-per-node") for a in uneven)
    assert "--mpi=pmi2" in srun_argv(res, LaunchOptions("slurm", srun_mpi="pmi2"))


def test_slurm_allocation_args() -> None:
    assert slurm_allocation_args(Resources(tasks=4), node_cpus=2) == [
        "--nodes=1", "--ntasks=4", "--cpus-per-task=1", "--overcommit"]
    assert slurm_allocation_args(Resources(tasks=2), node_cpus=2) == [
        "--nodes=1", "--ntasks=2", "--cpus-per-task=1"]


# -- per-run argv and preflight ------------------------------------------------------
def test_launch_argv_keeps_rank_output_in_the_run_dir(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    spec = replace(spec, resources=Resources(tasks=2))
    argv = launch_argv(spec, LaunchOptions("local"))
    assert argv[argv.index("--output-filename") + 1] == f"{spec.run_dir}/.hpcorch/ranks"
    assert argv[argv.index("HPCORCH_CONTRACT_BEHAVIOUR") - 1] == "-x"  # the spec's own env


def test_local_render_shows_mpirun_for_ranks(tmp_path: Path) -> None:
    one = contract_spec(tmp_path, 0)
    two = replace(contract_spec(tmp_path, 1), resources=Resources(tasks=2))
    lines = LocalProvider(LocalSettings(warm=False)).render([one, two]).splitlines()
    assert " mpirun " not in lines[2] and " mpirun -n 2 " in lines[4]


def test_preflight_missing_mpirun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    spec = contract_spec(tmp_path, 0)
    ranks = replace(spec, resources=Resources(tasks=2))
    preflight([spec], LaunchOptions("local"), one_machine=True)  # one rank: no mpirun needed
    with pytest.raises(ProviderUnavailable, match=r"resources.tasks=2: .*mpi-up.sh"):
        preflight([ranks], LaunchOptions("local"), one_machine=True)
    with pytest.raises(ProviderUnavailable, match=r"provider.mpirun='mpirun': the name or"):
        preflight([spec], LaunchOptions("mpi", single_rank=Launcher.MPIRUN), one_machine=False)
    with pytest.raises(ProviderUnavailable):  # the local provider refuses at submit
        LocalProvider(LocalSettings(warm=False)).submit([ranks])


def test_preflight_local_is_one_machine(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    spread = replace(spec, resources=Resources(nodes=2, tasks=2))
    with pytest.raises(ConfigError, match="resources.nodes=2: provider=local runs on"):
        preflight([spread], LaunchOptions("local"), one_machine=True)


# -- naming the failed rank ----------------------------------------------------------
MPIRUN_EXIT = """err line
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[16385,1],1]
  Exit code:    3
--------------------------------------------------------------------------
"""
MPIRUN_SIGNAL = ("mpirun noticed that process rank 2 with PID 0 on node c017 exited on "
                 "signal 11 (Segmentation fault).\n")
SRUN_EXIT = ("srun: error: c018: task 3: Exited with exit code 2\n"
             "srun: error: c018: tasks 0-2: Killed\n")


@pytest.mark.parametrize(("text", "rank", "host", "code", "sig"), [
    (MPIRUN_EXIT, 1, "", 3, None),
    (MPIRUN_SIGNAL, 2, "c017", None, 11),
    (SRUN_EXIT, 3, "c018", 2, None),
    ("MPI_ABORT was invoked on rank 5 in communicator MPI_COMM_WORLD\nwith errorcode 9\n",
     5, "", 9, None),
])
def test_parse_launcher_report(text: str, rank: int, host: str, code: int | None,
                               sig: int | None) -> None:
    report = parse_report(text)
    assert report is not None
    assert (report.rank, report.host, report.exit_code, report.signal) == (rank, host, code, sig)


def test_no_report_in_ordinary_stderr() -> None:
    assert parse_report("Traceback (most recent call last):\nValueError: x\n") is None


def test_a_launcher_failure_no_rank_explains_keeps_the_launchers_last_words(
        tmp_path: Path) -> None:
    """mpirun failing before any rank ran: the reason quotes its last stderr line."""
    from hpcorch.launch.failure import rank_failure
    from hpcorch.spec import FailureContext
    from hpcorch.store.records import STDERR_FILE, meta_dir

    spec = replace(contract_spec(tmp_path, 0), resources=Resources(tasks=2))
    meta_dir(spec.run_dir).mkdir(parents=True, exist_ok=True)
    (meta_dir(spec.run_dir) / STDERR_FILE).write_text(
        "some noise\nprterun was unable to start the daemon on node vm\n\n")
    context = rank_failure(spec, FailureContext("mpi", exit_code=1))
    assert context.reason == ("one of 2 rank(s) failed; no launcher report names it; "
                              "stderr ends: prterun was unable to start the daemon on node vm")
