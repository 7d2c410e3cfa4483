"""Podman/Docker: image resolution through the runner seam, and the exact `run` command."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from hpcorch.containers import ContainerError, ExecutionContext, load_settings, make_runtime
from hpcorch.containers.base import (
    ImageIdentity,
    PassedVariables,
    command_paths,
    container_run,
    inner_argv,
    plan_binds,
)
from hpcorch.containers.settings import Bind
from hpcorch.identity import run_key
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.spec import Resources, RunSpec

#: What the Slurm provider declares must reach a run inside its image.
SLURM_VARIABLES = PassedVariables(SlurmProvider.capabilities.container_env_prefixes,
                                  SlurmProvider.capabilities.container_env_names)

DIGEST = "sha256:" + "ab" * 32
APP = "/home/alice/exp"
RUN_DIR = f"{APP}/multirun/2024-05-01/12-00-00/3"


def make_spec(resources: Resources | None = None) -> RunSpec:
    """A run as the launcher builds it (paths fixed so renderings are stable)."""
    return RunSpec(
        run_key="k" * 16, sweep_id="sw1", num=3, overrides=("lr=0.1",), config={"lr": 0.1},
        seed=42, run_dir=RUN_DIR,
        command=("/home/alice/venv/bin/python", f"{APP}/train.py", "--config-name", "config",
                 "lr=0.1", f"hydra.run.dir={RUN_DIR}"),
        resources=resources or Resources(), workdir=APP, env=(("OMP_NUM_THREADS", "1"),))


class FakeRunner:
    """Records argv; answers with a canned CompletedProcess."""

    def __init__(self, rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.answer = (rc, stdout, stderr)

    def __call__(self, argv: Sequence[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        rc, out, err = self.answer
        return subprocess.CompletedProcess(list(argv), rc, out, err)


def podman(**node: object):  # type: ignore[no-untyped-def]
    settings = load_settings({"name": "podman", "image": "hpcorch:latest", **node})
    return settings, make_runtime(settings, FakeRunner(), which=lambda _: "/usr/bin/podman")


IDENTITY = ImageIdentity("podman", "hpcorch:latest", DIGEST, DIGEST)


def test_resolve_pins_the_image_id() -> None:
    settings = load_settings({"name": "podman", "image": "hpcorch:latest"})
    runner = FakeRunner(stdout="ab" * 32 + ' ["localhost/hpcorch@sha256:' + "cd" * 32 + '"]\n')
    identity = make_runtime(settings, runner).resolve("hpcorch:latest")
    assert runner.calls == [["podman", "image", "inspect", "--format",
                             "{{.Id}} {{json .RepoDigests}}", "hpcorch:latest"]]
    assert identity.digest == identity.run_ref == DIGEST
    assert identity.repo_digest == "localhost/hpcorch@sha256:" + "cd" * 32


def test_docker_ids_carry_their_prefix_already() -> None:
    settings = load_settings({"name": "docker", "image": "x"})
    identity = make_runtime(settings, FakeRunner(stdout=DIGEST + " []")).resolve("x")
    assert identity.digest == DIGEST and identity.repo_digest == ""


def test_missing_image_says_how_to_build_it() -> None:
    settings = load_settings({"name": "podman", "image": "nope:1"})
    runner = FakeRunner(rc=125, stderr="Error: nope:1: image not known\n")
    with pytest.raises(ContainerError, match=r"no such image.*containers/build.sh"):
        make_runtime(settings, runner).resolve("nope:1")


def test_missing_runtime_is_named_with_a_hint() -> None:
    settings = load_settings({"name": "podman", "image": "x", "executable": "/opt/podman"})
    with pytest.raises(ContainerError, match=r"'/opt/podman' not found on PATH.*podman-up.sh"):
        make_runtime(settings, FakeRunner(), which=lambda _: None).check()


def test_podman_command_exactly() -> None:
    settings, runtime = podman()
    argv = runtime.argv(container_run(make_spec(), settings, IDENTITY, SLURM_VARIABLES), IDENTITY)
    assert argv == [
        "podman", "run", "--rm", "--init", "--sig-proxy=true", "--pull=never",
        "--network", "none", "--uts", "host",
        "--name", "hpcorch-sw1-3-0", "--replace", "--timeout", "3900",
        "--workdir", APP,
        "--volume", f"{APP}:{APP}",
        "--env", "HPCORCH_CONTAINER_RUNTIME=podman",
        "--env", f"HPCORCH_IMAGE={IDENTITY.reference}",
        "--env", f"HPCORCH_IMAGE_DIGEST={DIGEST}",
        "--env", "HPCORCH_SEED=42",
        "--env", f"HPCORCH_SPEC={RUN_DIR}/.hpcorch/spec.json",
        "--env", "OMP_NUM_THREADS=1",
        "--env", "PYTHONHASHSEED=42",
        "--env", "HPCORCH_PROVIDER", "--env", "HPCORCH_JOB_ID", "--env", "HPCORCH_RESTART_COUNT",
        "--env", "HPCORCH_RANK_SOURCES",
        "--env", "CUDA_VISIBLE_DEVICES", "--env", "TZ",
        "--env", "OMPI_*", "--env", "PMIX_*", "--env", "PMI_*", "--env", "SLURM_*",
        "--env", "SLURMD_NODENAME",  # declared by Slurm, not covered by its SLURM_ prefix
        DIGEST,
        "python", f"{APP}/train.py", "--config-name", "config", "lr=0.1",
        f"hydra.run.dir={RUN_DIR}",
    ]


def test_gpus_network_binds_ranks_and_extra_args() -> None:
    settings, runtime = podman(network=True, binds=["/scratch:/scratch"], data=["/data/x"],
                               env=["WANDB_*"], extra_args=["--shm-size", "8g"])
    spec = make_spec(Resources(gpus=2, nodes=1, tasks_per_node=4))
    argv = runtime.argv(container_run(spec, settings, IDENTITY), IDENTITY)
    text = " ".join(argv)
    assert "--network host" in text and "--ipc host" in text
    assert "--name" not in argv  # ranks would replace each other's container
    assert "--device nvidia.com/gpu=all" in text
    assert "--volume /scratch:/scratch --volume /data/x:/data/x:ro" in text
    assert "--env WANDB_*" in text
    assert argv.index("--shm-size") < argv.index(DIGEST)  # runtime flags before the image


def test_docker_spells_out_scheduler_variables_and_gpus() -> None:
    settings = load_settings({"name": "docker", "image": "x"})
    runtime = make_runtime(settings, FakeRunner(), which=lambda _: "/usr/bin/docker")
    argv = runtime.argv(container_run(make_spec(Resources(gpus=1)), settings, IDENTITY,
                                      SLURM_VARIABLES), IDENTITY)
    assert "SLURM_*" not in argv and "SLURM_PROCID" in argv and "PMIX_RANK" in argv
    assert argv[argv.index("--gpus") + 1] == "all"
    assert "--replace" not in argv and "--timeout" not in argv  # podman-only flags


def test_no_gpu_flags_unless_resources_ask() -> None:
    settings, runtime = podman(gpu_flags=["--device", "/dev/dri"])
    cpu = runtime.argv(container_run(make_spec(), settings, IDENTITY), IDENTITY)
    gpu = runtime.argv(container_run(make_spec(Resources(gpus=1)), settings, IDENTITY), IDENTITY)
    assert "/dev/dri" not in cpu and "/dev/dri" in gpu


def test_wrap_pins_image_in_spec_and_keeps_everything_else() -> None:
    settings, runtime = podman()
    spec = make_spec()
    wrapped = ExecutionContext(settings, runtime, IDENTITY).wrap(spec)
    assert wrapped.image == DIGEST and wrapped.command[0] == "podman"
    assert wrapped.command[-len(spec.command) + 1:] == spec.command[1:]
    assert (wrapped.overrides, wrapped.seed, wrapped.run_dir) == (spec.overrides, spec.seed,
                                                                   spec.run_dir)
    none = ExecutionContext(load_settings(None))
    assert none.wrap(spec) is spec and none.image is None


def test_run_key_depends_on_the_digest() -> None:
    base = run_key({"lr": 0.1}, code_version="git:abc", seed=1)
    assert run_key({"lr": 0.1}, code_version="git:abc", seed=1, image=DIGEST) != base
    other = "sha256:" + "ef" * 32
    assert run_key({"lr": 0.1}, code_version="git:abc", seed=1, image=other) != \
        run_key({"lr": 0.1}, code_version="git:abc", seed=1, image=DIGEST)


def test_inner_argv_replaces_only_the_interpreter() -> None:
    assert inner_argv(("/venv/bin/python3.11", "train.py"), "python") == ("python", "train.py")
    assert inner_argv(("mpirun", "-n", "2"), "python") == ("mpirun", "-n", "2")


def test_binds_cover_app_config_and_run_dirs_once() -> None:
    spec = make_spec()
    spec = RunSpec.from_dict({**spec.to_dict(), "command": [
        "python", "/code/train.py", "--config-dir", "/site/conf", "x=1"]})
    assert command_paths(spec.command) == ["/code", "/site/conf"]
    binds = plan_binds(spec, [Bind("/data", "/data", True), Bind(f"{APP}/sub", f"{APP}/sub")])
    # The run dir and APP/sub lie inside APP (bound read-write): not bound twice.
    assert binds == (Bind(APP, APP), Bind("/code", "/code"), Bind("/site/conf", "/site/conf"),
                     Bind("/data", "/data", True))


def test_system_directories_are_never_mounted() -> None:
    spec = RunSpec.from_dict({**make_spec().to_dict(), "workdir": "/"})
    with pytest.raises(ContainerError, match="refusing to mount / at /"):
        plan_binds(spec, [])
    with pytest.raises(ContainerError, match="at /usr"):
        plan_binds(make_spec(), [Bind("/home/alice/usr", "/usr")])


def test_only_the_providers_own_engine_variables_reach_the_container() -> None:
    """Scheduler variables come from the provider's Capabilities, MPI's always: a local run
    in an image gets no SLURM_*, a Grid Engine run gets its JOB_ID by name."""
    settings, runtime = podman()
    local = runtime.argv(container_run(make_spec(), settings, IDENTITY), IDENTITY)
    assert "SLURM_*" not in local and "OMPI_*" in local and "PMIX_*" in local
    sge = PassedVariables(("SGE_",), ("JOB_ID", "SGE_TASK_ID"))
    argv = runtime.argv(container_run(make_spec(), settings, IDENTITY, sge), IDENTITY)
    assert "SGE_*" in argv and "JOB_ID" in argv and "SGE_TASK_ID" not in argv
    assert "SLURM_*" not in argv


def test_a_sweeps_cached_context_takes_each_providers_own_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The image is pinned once per sweep dir; the engine variables are the asking
    provider's, also when the context comes from that cache."""
    from hpcorch.containers import context as ctx_module

    prepared: list[object] = []
    real = ctx_module.prepare_container

    def counting(*args: object, **kwargs: object) -> ExecutionContext:
        prepared.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx_module, "prepare_container", counting)
    monkeypatch.setattr(ctx_module, "_SWEEP_CONTEXTS", {})
    slurm = PassedVariables(("SLURM_",), ("SLURMD_NODENAME",))
    sge = PassedVariables(("SGE_",), ("JOB_ID",))
    first = ctx_module.sweep_context({"name": "none"}, key="/sweeps/a", passed=slurm)
    second = ctx_module.sweep_context({"name": "none"}, key="/sweeps/a", passed=sge)
    assert len(prepared) == 1  # the second came from the cache
    assert first.passed == slurm and second.passed == sge
