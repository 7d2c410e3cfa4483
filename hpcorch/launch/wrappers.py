"""Launch wrappers: how one run fans out into ranks inside what its provider gave it.

Three wrappers, chosen from the run's rank count and the launchers its provider
declares (its Capabilities: `multi_rank`, `single_rank`, copied into LaunchOptions):

    direct   the command itself (one rank; what most providers declare for one rank)
    mpirun   Open MPI's mpirun: several ranks on this machine or on a provider's host
             list (a provider that reaches its hosts only through mpirun uses it always)
    srun     srun --mpi=pmix inside a scheduler's allocation, tasks > 1

They compose inside out with whatever command they are given (a container
wrapper included): `mpirun ... [rank shim] apptainer exec IMG python train.py`.
The rank shim (`python -m hpcorch.worker.ranks`) sits innermost only when the
run declares GPUs, to give every rank its own devices.

Flags that only some situations need are added only then: --allow-run-as-root
when running as root, --oversubscribe when the ranks on a node exceed its
slots, --overcommit for srun likewise, and the loopback-only transport when
every rank runs on this machine.

What listens where (Open MPI 4.1.4, PMIx 4.2.2, measured with `ss -ltnp`):

    one host    (provider=local, provider=mpi with only localhost): nothing beyond
                loopback. Ranks talk over shared memory (btl self,vader); mpirun's
                PMIx listener is on 127.0.0.1 by itself; its out-of-band port, which
                Open MPI binds to the wildcard address whatever the MCA settings, is
                moved to 127.0.0.1 / ::1 by `hpcorch.launch.loopback`'s bind shim.
    several hosts  (provider=mpi with hosts): what Open MPI needs to reach them, no
                shim (not measurable on this one machine; from Open MPI 4.1's code):
                mpirun and every remote orted listen on all interfaces for the
                out-of-band channel (remote daemons connect back to mpirun), ranks
                on different hosts use btl tcp (listening on all interfaces) or
                whatever `provider.mpirun_args` selects. Narrow the interfaces they
                use and advertise with provider.mpirun_args, e.g.
                [--mca, oob_tcp_if_include, eth0, --mca, btl_tcp_if_include, eth0].
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from hpcorch.errors import ConfigError, ProviderUnavailable
from hpcorch.jobenv import JOB_ENV, PROVIDER_ENV
from hpcorch.launch import loopback
from hpcorch.launch.hosts import Placement, is_local_host
from hpcorch.rankfiles import ranks_dir
from hpcorch.spec import Resources, RunSpec

#: JOB_ENV (hpcorch.jobenv): variables every provider sets for a job; mpirun forwards
#: only what it is told to (-x), and remote ranks need them all.

#: Open MPI transports for runs that stay on this machine: shared memory between ranks,
#: and mpirun's out-of-band channel on loopback (also works in a namespace holding only lo).
LOOPBACK_MCA: tuple[str, ...] = ("--mca", "btl", "self,vader", "--mca", "oob_tcp_if_include", "lo")

#: Open MPI's MCA variable that makes a waiting rank yield its core (see srun_argv).
YIELD_WHEN_IDLE = "OMPI_MCA_mpi_yield_when_idle"

MPI_INSTALL_HINT = ("install Open MPI (scripts/mpi-up.sh: apt-get install --no-install-recommends "
                    "openmpi-bin libopenmpi-dev) and mpi4py (pip install 'hpcorch[mpi]')")


class Launcher(str, Enum):
    """How a run's command is started inside its allocation."""

    DIRECT = "direct"
    """The command itself, one process."""
    MPIRUN = "mpirun"
    """Open MPI's mpirun, on this machine or on the hosts of a placement."""
    SRUN = "srun"
    """Slurm's srun inside an allocation; --mpi=pmix is what Debian's Open MPI works with."""


@dataclass(frozen=True)
class LaunchOptions:
    """What a provider knows about where the ranks run; the wrappers turn it into flags."""

    provider: str = ""
    """The provider's name: a label only (messages, and HPCORCH_PROVIDER for the ranks);
    nothing here depends on its value."""
    as_root: bool = False
    """The launching user is root (Open MPI's mpirun refuses without being told)."""
    slots: int | None = None
    """Ranks one node holds before it is oversubscribed (cores here); None when unknown."""
    placement: Placement | None = None
    """Hosts (and devices) a provider chose for the ranks; None = this machine."""
    cores: int | None = None
    """Cores of this machine, when a placement's slots on it may exceed them."""
    mpirun: str = "mpirun"
    srun: str = "srun"
    srun_mpi: str = "pmix"
    bind_to: str = "none"
    """Rank binding. none by default: several runs share a node, and each mpirun would
    otherwise pin its ranks to the same first cores."""
    output_dir: str | None = None
    """Directory for per-rank stdout/stderr files (mpirun --output-filename)."""
    export: tuple[str, ...] = ()
    """More environment variables to forward to every rank."""
    mpirun_args: tuple[str, ...] = ()
    """Extra mpirun arguments, passed through as given (argv, never a shell)."""
    label: bool = False
    """srun: prefix every output line with its rank (--label). The ranks' stderr then shares
    one file and still tells which rank said what (the failure context's stderr tail)."""
    python: str = sys.executable
    """The interpreter that runs the rank shim."""
    bind_shim: str | None = None
    """`hpcorch.launch.loopback`'s library, preloaded into a single-host mpirun so that its
    wildcard listeners bind to loopback; `launch_argv` fills it in (None: not preloaded)."""

    multi_rank: Launcher = field(default=Launcher.MPIRUN, kw_only=True)
    """How a run with several ranks starts (the provider's Capabilities.multi_rank)."""
    single_rank: Launcher = field(default=Launcher.DIRECT, kw_only=True)
    """How a one-rank run starts (the provider's Capabilities.single_rank)."""

    def launcher_for(self, tasks: int) -> Launcher:
        """The launcher of a run with `tasks` ranks."""
        return self.multi_rank if tasks > 1 else self.single_rank

    @property
    def mpirun_is_the_provider(self) -> bool:
        """mpirun is how the provider reaches its hosts (it starts even one rank), so a
        missing mpirun is the provider's setting, not the run's rank count."""
        return self.single_rank is Launcher.MPIRUN

    @classmethod
    def here(cls, provider: str, **values: object) -> LaunchOptions:
        """Options for launching from this process (root detected)."""
        return cls(provider=provider, as_root=os.geteuid() == 0, **values)  # type: ignore[arg-type]


def choose_launcher(resources: Resources, options: LaunchOptions) -> Launcher:
    """The wrapper for a run: the provider's launcher for one rank or for several."""
    return options.launcher_for(resources.tasks)


def shim_argv(resources: Resources, options: LaunchOptions) -> list[str]:
    """The rank shim, only when the run declares GPUs."""
    if resources.gpus <= 0:
        return []
    argv = [options.python, "-m", "hpcorch.worker.ranks", "--gpus", str(resources.gpus)]
    rank_devices = options.placement.rank_devices() if options.placement else ()
    if rank_devices:
        argv += ["--rank-devices", ";".join(rank_devices)]
    return [*argv, "--"]


def mpirun_argv(resources: Resources, options: LaunchOptions,
                env_names: Sequence[str] = ()) -> list[str]:
    """`mpirun -n N ...` up to (not including) the command."""
    local = on_this_machine(options)
    argv = [options.mpirun, "-n", str(resources.tasks)]
    if local and options.bind_shim:
        # argv, not the job environment: the library leaves LD_PRELOAD again at start-up,
        # so only mpirun binds to loopback, never the research code.
        argv = ["env", f"LD_PRELOAD={loopback.preload_value(options.bind_shim)}", *argv]
    if options.as_root:
        argv.append("--allow-run-as-root")
    placement = options.placement
    if placement is not None:
        argv += ["--host", placement.host_arg(), "--map-by", "slot"]
        per_node = max(count for _, count in placement.hosts)
    else:
        per_node = resources.tasks  # no placement: every rank runs on this machine
    if options.slots is not None and per_node > options.slots:
        argv.append("--oversubscribe")  # Open MPI then also yields the core when idle
    elif local and options.cores is not None and per_node > options.cores:
        # Declared slots beyond the cores: without yielding, busy-polling ranks starve
        # each other (a 4-rank train.py on 2 cores: 5.8 s instead of 0.6 s).
        argv += ["--mca", "mpi_yield_when_idle", "1"]
    argv += ["--bind-to", options.bind_to]
    if local:
        argv += LOOPBACK_MCA
    if options.output_dir:
        argv += ["--output-filename", options.output_dir]
    names = dict.fromkeys([*JOB_ENV, *env_names, *options.export])
    for name in names:
        argv += ["-x", name]
    if options.provider:
        argv += ["-x", f"{PROVIDER_ENV}={options.provider}"]
    return [*argv, *options.mpirun_args]


def on_this_machine(options: LaunchOptions) -> bool:
    """Every rank runs on this machine (no placement, or one naming only this host)."""
    placement = options.placement
    return placement is None or all(is_local_host(name) for name, _ in placement.hosts)


def srun_argv(resources: Resources, options: LaunchOptions) -> list[str]:
    """`srun --mpi=pmix ...` for a step inside an existing allocation, up to the command."""
    argv = [options.srun, f"--mpi={options.srun_mpi}", f"--nodes={resources.nodes}",
            f"--ntasks={resources.tasks}", f"--cpus-per-task={resources.cpus}"]
    if resources.nodes > 1 and resources.tasks == resources.nodes * resources.tasks_per_node:
        argv.append(f"--ntasks-per-node={resources.tasks_per_node}")
    export = "--export=ALL" + (f",{PROVIDER_ENV}={options.provider}" if options.provider else "")
    if options.slots is not None and resources.tasks_per_node * resources.cpus > options.slots:
        argv.append("--overcommit")
        # What mpirun's --oversubscribe implies: ranks yield the core while they wait.
        # Busy-polling Open MPI ranks on too few cores starve each other (4 ranks of
        # train.py in two runs on 2 cores: 23 s instead of 2 s).
        export += f",{YIELD_WHEN_IDLE}=1"
    if options.label:
        argv.append("--label")
    # Any rank failing ends the step (mpirun does this by default).
    argv += ["--kill-on-bad-exit=1", export]
    return argv


def slurm_allocation_args(resources: Resources, node_cpus: int | None = None) -> list[str]:
    """sbatch options that allocate what `srun_argv` then uses (for the Slurm provider)."""
    args = [f"--nodes={resources.nodes}", f"--ntasks={resources.tasks}",
            f"--cpus-per-task={resources.cpus}"]
    if resources.nodes > 1 and resources.tasks == resources.nodes * resources.tasks_per_node:
        args.append(f"--ntasks-per-node={resources.tasks_per_node}")
    if node_cpus is not None and resources.tasks_per_node * resources.cpus > node_cpus:
        args.append("--overcommit")
    return args


def wrap(command: Sequence[str], resources: Resources, options: LaunchOptions,
         launcher: Launcher | None = None, env_names: Sequence[str] = ()) -> list[str]:
    """`command` wrapped by the launcher for these resources (inside out: shim, then launcher)."""
    launcher = launcher or choose_launcher(resources, options)
    if launcher is Launcher.DIRECT:
        return list(command)
    inner = [*shim_argv(resources, options), *command]
    if launcher is Launcher.SRUN:
        return [*srun_argv(resources, options), *inner]
    return [*mpirun_argv(resources, options, env_names), *inner]


def launch_argv(spec: RunSpec, options: LaunchOptions) -> list[str]:
    """The argv that starts one run, its per-rank output kept under its run directory."""
    if options.output_dir is None:
        options = replace(options, output_dir=str(ranks_dir(spec.run_dir)))
    launcher = choose_launcher(spec.resources, options)
    if launcher is Launcher.MPIRUN and options.bind_shim is None and on_this_machine(options):
        options = replace(options, bind_shim=loopback.shim())
    return wrap(spec.command, spec.resources, options, env_names=[k for k, _ in spec.env])


def preflight(specs: Sequence[RunSpec], options: LaunchOptions, *, one_machine: bool) -> None:
    """Refuse, before anything starts, runs whose launcher is missing or cannot place them.

    `one_machine`: the provider runs everything on this machine (local), so a run
    cannot ask for more than one node.
    """
    for spec in specs:
        if one_machine and spec.resources.nodes > 1:
            raise ConfigError("resources.nodes", spec.resources.nodes,
                              f"provider={options.provider} runs on this one machine: must be 1 "
                              "(use provider=mpi with a host list, or provider=slurm)")
    first = next((s for s in specs if choose_launcher(s.resources, options)
                  is Launcher.MPIRUN), None)
    if first is None:
        return
    if options.mpirun_is_the_provider:
        require_mpirun(options.mpirun, "provider.mpirun", options.mpirun)
    else:
        require_mpirun(options.mpirun, "resources.tasks", first.resources.tasks)


def require_mpirun(mpirun: str, key: str, value: object) -> str:
    """The full path of `mpirun`, or ProviderUnavailable naming the setting and the fix."""
    found = shutil.which(mpirun)
    if found is None:
        if key == "provider.mpirun":
            allowed = "the name or full path of Open MPI's mpirun"
        else:
            allowed = f"more than one rank is started by Open MPI's {mpirun!r}"
        raise ProviderUnavailable(f"{key}={value!r}: {allowed}, which is not on PATH; "
                                  f"{MPI_INSTALL_HINT}")
    return found
