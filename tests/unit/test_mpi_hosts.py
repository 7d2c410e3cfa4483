"""provider=mpi without running anything: host lists, slot placement, settings, preflight."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError, ProviderUnavailable
from hpcorch.launch import Host, SlotPool
from hpcorch.launch.hosts import build_hosts, is_local_host, parse_host_entry, parse_hostfile
from hpcorch.providers import create_provider
from hpcorch.providers.mpi import MpiProvider, MpiSettings
from hpcorch.settings import parse_settings
from hpcorch.spec import Resources
from hpcorch.testing import contract_spec


# -- host lists ---------------------------------------------------------------------
def test_host_entries() -> None:
    assert parse_host_entry("gpu01:8", 2, "k") == ("gpu01", 8)
    assert parse_host_entry("localhost", 2, "k") == ("localhost", 2)
    for bad in ("gpu01:x", "a b", "gpu01:0", ""):
        with pytest.raises(ConfigError, match="k="):
            parse_host_entry(bad, 2, "k")


def test_hostfile() -> None:
    text = "# cluster\ngpu01 slots=4 max_slots=8\n\ngpu02   # default slots\n"
    assert parse_hostfile(text, 2, "f") == [("gpu01", 4), ("gpu02", 2)]
    with pytest.raises(ConfigError, match="f line 1"):
        parse_hostfile("gpu01 slots=x\n", 2, "f")
    with pytest.raises(ConfigError, match="names no host"):
        parse_hostfile("# nothing\n", 2, "f")


def test_duplicate_hosts_are_refused() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        build_hosts([("a", 2), ("a", 2)], (), "provider.hosts")


def test_local_host_names() -> None:
    assert is_local_host("localhost") and is_local_host("127.0.0.1")
    assert not is_local_host("gpu01.example.org")


# -- placement ------------------------------------------------------------------------
def pool(*slots: int, gpus: int = 0) -> SlotPool:
    ids = tuple(str(i) for i in range(gpus))
    return SlotPool([Host(f"h{i}", n, ids) for i, n in enumerate(slots)])


def test_runs_share_a_host_while_they_fit_then_wait() -> None:
    p = pool(4)
    first, second = p.place(Resources(tasks=2)), p.place(Resources(tasks=2))
    assert first is not None and second is not None
    assert first.hosts == second.hosts == (("h0", 2),)
    assert p.place(Resources(tasks=1)) is None
    p.release(first)
    assert p.place(Resources(tasks=2)) is not None


def test_first_fit_in_host_order_and_multi_node() -> None:
    p = pool(2, 4)
    big = p.place(Resources(tasks=3))
    assert big is not None and big.hosts == (("h1", 3),)
    spread = p.place(Resources(nodes=2, tasks=2))
    assert spread is not None and spread.hosts == (("h0", 1), ("h1", 1))
    p.release(big)
    p.release(spread)
    assert p.idle


def test_gpus_are_handed_out_and_back() -> None:
    p = pool(8, gpus=4)
    a = p.place(Resources(tasks=2, gpus=2))
    b = p.place(Resources(tasks=2, gpus=2))
    assert a is not None and b is not None
    assert (a.rank_devices(), b.rank_devices()) == (("0", "1"), ("2", "3"))
    assert p.place(Resources(tasks=1, gpus=1)) is None  # slots left, devices not
    p.release(a)
    c = p.place(Resources(tasks=1, gpus=1))
    assert c is not None and c.rank_devices() == ("0",)


@pytest.mark.parametrize(("resources", "key", "text"), [
    (Resources(tasks=8), "resources.tasks", "at most 4 rank(s) on one host"),
    (Resources(nodes=3, tasks=3), "resources.nodes", "has 2 host(s)"),
    (Resources(tasks=1, gpus=2), "resources.gpus", "allowed: 0..1"),
])
def test_runs_that_never_fit(resources: Resources, key: str, text: str) -> None:
    error = pool(4, 2, gpus=1).never_fits(resources)
    assert error is not None and error.key == key and text in str(error)
    assert pool(4, 4, gpus=2).never_fits(Resources(nodes=2, tasks=8, gpus=2)) is None


# -- settings and preflight -------------------------------------------------------------
def test_settings_from_config() -> None:
    provider = create_provider({"name": "mpi", "hosts": ["a:4", "b:4"], "gpus_per_host": 2,
                                "mpirun_args": ["--mca", "btl_tcp_if_include", 10]})
    assert isinstance(provider, MpiProvider)
    assert provider.mpi.devices == ("0", "1")
    assert parse_settings(MpiSettings, {"gpu_ids": [7, "5"]}, "provider").devices == ("7", "5")


@pytest.mark.parametrize(("values", "key"), [
    ({"hosts": ["a:x"]}, "provider.hosts[0]"),
    ({"hosts": []}, "provider.hosts"),
    ({"gpus_per_host": 2, "gpu_ids": [0]}, "provider.gpu_ids"),
    ({"gpu_ids": [1, 1]}, "provider.gpu_ids"),
    ({"slots_per_host": 0}, "provider.slots_per_host"),
    ({"bind_to": "numa"}, "provider.bind_to"),
    ({"host": ["a"]}, "provider.host"),
])
def test_bad_settings_name_the_key(values: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(MpiSettings, values, "provider")
    assert err.value.key == key


class FakeRunner:
    """The CommandRunner seam: answers `mpirun --version` without running it."""

    def __init__(self, stdout: str, returncode: int = 0) -> None:
        self.stdout, self.returncode = stdout, returncode
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), self.returncode, self.stdout, "")


def test_check_wants_open_mpi(tmp_path: Path) -> None:
    fake = tmp_path / "mpirun"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    runner = FakeRunner("mpirun (Open MPI) 4.1.4\n")
    MpiProvider(MpiSettings(mpirun=str(fake)), runner=runner).check()
    assert runner.calls == [[str(fake), "--version"]]
    with pytest.raises(ProviderUnavailable, match="did not report Open MPI"):
        MpiProvider(MpiSettings(mpirun=str(fake)),
                    runner=FakeRunner("HYDRA build details (MPICH)")).check()
    with pytest.raises(ProviderUnavailable, match="provider.mpirun='/no/such/mpirun'"):
        MpiProvider(MpiSettings(mpirun="/no/such/mpirun"), runner=runner).check()


def test_hostfile_is_read_on_first_use_not_in_init(tmp_path: Path) -> None:
    provider = MpiProvider(MpiSettings(hostfile=str(tmp_path / "missing")))  # no I/O yet
    with pytest.raises(ConfigError, match="provider.hostfile="):
        provider.render([])
    (tmp_path / "hosts").write_text("localhost slots=3\n")
    text = MpiProvider(MpiSettings(hostfile=str(tmp_path / "hosts"))).render([])
    assert "hosts=localhost:3" in text


def test_submit_refuses_a_run_that_never_fits_before_starting_any(tmp_path: Path) -> None:
    provider = MpiProvider(MpiSettings(hosts=("localhost:2",), mpirun="true"))
    small = contract_spec(tmp_path, 0)
    big = replace(contract_spec(tmp_path, 1), resources=Resources(tasks=4))
    with pytest.raises(ConfigError, match=r"resources.tasks=4: .*\(localhost:2"):
        provider.submit([small, big])
    assert provider.status([]) == [] and provider.processes.idle


def test_render_places_on_idle_hosts(tmp_path: Path) -> None:
    spec = contract_spec(tmp_path, 0)
    spec = replace(spec, resources=Resources(tasks=2, gpus=1))
    text = MpiProvider(MpiSettings(hosts=("localhost:2",), gpus_per_host=2)).render([spec])
    assert "mpirun -n 2" in text and "--host localhost:2" in text
    assert "--rank-devices '0;0'" in text and spec.run_dir in text
