"""Single-host MPI runs open no port beyond loopback, checked with `ss` OUTSIDE the test
namespace (issue 10, point 6).

The tests run inside a namespace that holds only loopback, where every listener is
on loopback anyway. So each sweep here is started in the namespace the test suite
was started from (an ancestor's, entered with nsenter), which has the machine's
other interfaces. Its ranks hold still until `ss` has listed the listening sockets
of every process of the sweep (mpirun, its ranks, hpcorch): each must be bound to
127.0.0.0/8, ::1 or be a unix socket (which `ss -t -u` does not list).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.integration.helpers import records
from tests.integration.mpi_support import mpi_available

pytestmark = [pytest.mark.integration, pytest.mark.mpi]

#: Every rank says it is up (after MPI_Init and a barrier: mpirun's listeners all exist
#: by then), then waits for the test's go file, so `ss` sees the run while it runs.
HOLD_APP = '''
import os, time
import hydra
from hpcorch.worker import ranks

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from mpi4py import MPI

    me = ranks.current()
    MPI.COMM_WORLD.Barrier()
    open(os.path.join(cfg.signals, f"ready.{me.rank}"), "w").close()
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(cfg.signals, "go")) and time.monotonic() < deadline:
        time.sleep(0.05)
    MPI.COMM_WORLD.Barrier()
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''

_USERS = re.compile(r"pid=(\d+)")


@pytest.fixture(autouse=True)
def _needs_mpi() -> None:
    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py",
                    "run scripts/mpi-up.sh and pip install -e '.[mpi]'")


@pytest.fixture(scope="module")
def outside() -> list[str]:
    """The argv prefix that runs a command in a namespace with a non-loopback interface."""
    prefix = _outside_prefix()
    addrs = subprocess.run([*prefix, "ip", "-o", "addr", "show"], capture_output=True,
                           text=True, timeout=60, check=False)
    require_service(addrs.returncode == 0 and any(
        not _is_loopback(line.split()[3].split("/")[0]) for line in addrs.stdout.splitlines()
        if len(line.split()) > 3 and line.split()[2] in ("inet", "inet6")),
        "a network namespace with a non-loopback interface (enterable with nsenter)",
        f"run the tests as root from the machine's own namespace ({addrs.stderr.strip()})")
    return prefix


def _outside_prefix() -> list[str]:
    """nsenter into the first ancestor's network namespace that is not ours (none: ours)."""
    mine = os.readlink("/proc/self/ns/net")
    pid = os.getppid()
    while pid > 1:
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            break
        if theirs != mine:
            return ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        pid = _ppid(pid)
    return []


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> set[int]:
    """`root` and every process below it (from /proc: the pid namespace is shared)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            children.setdefault(_ppid(int(entry)), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").split("%", 1)[0]
    if host == "*":
        return False
    address = ipaddress.ip_address(host)
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _listeners(prefix: list[str], pids: set[int]) -> list[str]:
    """`ss` lines of the TCP listeners and UDP sockets that these processes hold."""
    done = subprocess.run([*prefix, "ss", "-H", "-l", "-t", "-u", "-n", "-p"],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line for line in done.stdout.splitlines()
            if {int(p) for p in _USERS.findall(line)} & pids]


def _local_address(line: str) -> str:
    return line.split()[4].rsplit(":", 1)[0]


def _hold_sweep(app_dir: Path, prefix: list[str], *overrides: str,
                env: dict[str, str] | None = None) -> tuple[list[str], str, Path]:
    """Run a 2-rank sweep of HOLD_APP outside; its listeners (seen while both ranks are
    up), its stderr and its sweep directory."""
    (app_dir / "hold.py").write_text(HOLD_APP)
    signals = app_dir / "signals"
    signals.mkdir()
    sweep_dir = app_dir / "multirun" / "hold"
    argv = [*prefix, sys.executable, "hold.py", "-m", "resources.tasks=2", *overrides,
            f"+signals={signals}", f"hydra.sweep.dir={sweep_dir}", "hpcorch.progress=off"]
    stderr = app_dir / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(argv, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "HPCORCH_HOME": str(app_dir / "home"),
                                     **(env or {})})
    try:
        deadline = time.monotonic() + 240
        while not all((signals / f"ready.{r}").exists() for r in (0, 1)):
            assert proc.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "the ranks did not start within 240 s"
            time.sleep(0.1)
        pids = _descendants(proc.pid)
        assert any(Path(f"/proc/{p}/comm").read_text().strip() == "mpirun" for p in pids
                   if Path(f"/proc/{p}/comm").exists()), "no mpirun below the sweep"
        seen = _listeners(prefix, pids)
        (signals / "go").touch()
        assert proc.wait(timeout=240) == 0, stderr.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen, stderr.read_text(), sweep_dir


@pytest.mark.parametrize("provider", ["local", "mpi"])
def test_single_host_mpi_run_listens_on_loopback_only(app_dir: Path, outside: list[str],
                                                      provider: str) -> None:
    hosts = ["provider=mpi", "provider.hosts=[localhost:2]"] if provider == "mpi" else []
    seen, stderr, sweep_dir = _hold_sweep(app_dir, outside, *hosts,
                                          env={"XDG_CACHE_HOME": str(app_dir / "cache")})
    assert seen, "ss listed no listener of mpirun: the check would prove nothing"
    open_wide = [line for line in seen if not _is_loopback(_local_address(line))]
    assert not open_wide, "\n".join(seen)
    assert "loopback bind shim" not in stderr
    assert [r["state"] for r in records(sweep_dir)] == ["SUCCEEDED"]


def test_without_the_bind_shim_mpirun_listens_on_every_interface(app_dir: Path,
                                                                  outside: list[str]) -> None:
    """The control: no compiler for the shim, so one notice, and this check does see
    Open MPI 4.1's wildcard listeners (what the test above would fail on)."""
    seen, stderr, _ = _hold_sweep(app_dir, outside, env={
        "XDG_CACHE_HOME": str(app_dir / "cache"), "CC": "/bin/false"})
    assert "cannot build the loopback bind shim" in stderr
    assert [line for line in seen if not _is_loopback(_local_address(line))], "\n".join(seen)
