"""A Slurm partition's limits for one run: parsing `scontrol show partition|node -o`, and
`SlurmProvider.limits` reading them once, through the runner, never raising."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from hpcorch.providers.slurm.limits import (
    parse_key_values,
    parse_mem_mb,
    parse_records,
    parse_time_min,
    partition_nodes,
    pick_partition,
    resource_limits,
)
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.spec import ResourceLimits, Resources

# Recorded on the local Slurm 22.05 (scripts/in-netns.sh scontrol show partition -o / node -o).
LOCAL_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL "
    "Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 "
    "Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO "
    "MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO "
    "ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 "
    "TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=24105M,node=1,billing=2\n")
LOCAL_NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.08 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 "
    "NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=24105 AllocMem=0 FreeMem=23760 Sockets=2 Boards=1 State=IDLE "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  "
    "BootTime=2026-12-08T01:01:04 SlurmdStartTime=2026-12-08T01:04:50 "
    "LastBusyTime=2026-12-08T01:04:51 CfgTRES=cpu=2,mem=24105M,billing=2 AllocTRES= "
    "CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 "
    "ExtSensorsTemp=n/s\n")

# A site with several partitions, in the same format (fields a limit does not need left out).
SITE_PARTITIONS = """\
PartitionName=cpu Default=YES MaxNodes=8 MaxTime=2-00:00:00 Nodes=c[001-002] TotalCPUs=96 \
TotalNodes=2 DefMemPerCPU=2000 MaxMemPerCPU=4000
PartitionName=gpu Default=NO MaxNodes=UNLIMITED MaxTime=12:00:00 Nodes=g01 TotalCPUs=64 \
TotalNodes=1 DefMemPerNode=UNLIMITED MaxMemPerNode=256000
PartitionName=short Default=NO MaxNodes=1 MaxTime=30 Nodes=c[001-002],g01 TotalNodes=3 \
MaxMemPerNode=UNLIMITED
"""
SITE_NODES = """\
NodeName=c001 CPUAlloc=0 CPUEfctv=46 CPUTot=48 RealMemory=191000 State=IDLE \
Partitions=cpu,short OS=Linux 5.14 #1 SMP
NodeName=c002 CPUAlloc=0 CPUEfctv=22 CPUTot=24 RealMemory=95000 State=DOWN+DRAIN \
Reason=broken fan [root@2026-12-01T10:00:00] Partitions=cpu,short
NodeName=g01 CPUAlloc=0 CPUTot=64 RealMemory=512000 State=MIXED Partitions=gpu,short
"""


def test_key_values_with_spaces_and_equals_in_values() -> None:
    node = parse_key_values(LOCAL_NODES)
    assert node["OS"] == "Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0"
    assert node["CfgTRES"] == "cpu=2,mem=24105M,billing=2" and node["AllocTRES"] == ""
    assert (node["NodeName"], node["RealMemory"], node["Partitions"]) == (
        "vm", "24105", "debug")
    reason = parse_key_values(SITE_NODES.splitlines()[1])["Reason"]
    assert reason == "broken fan [root@2026-12-01T10:00:00]"


def test_the_local_cluster() -> None:
    [partition] = parse_records(LOCAL_PARTITIONS)
    nodes = partition_nodes(parse_records(LOCAL_NODES), "debug")
    assert resource_limits(partition, nodes) == ResourceLimits(
        where="partition debug", max_mem_gb=24105 / 1024, max_time_min=None, max_cpus=2,
        max_nodes=1)  # MaxNodes=UNLIMITED: TotalNodes


def test_site_partitions() -> None:
    partitions, nodes = parse_records(SITE_PARTITIONS), parse_records(SITE_NODES)

    def limits(name: str | None) -> ResourceLimits:
        partition = pick_partition(partitions, name)
        assert partition is not None
        return resource_limits(partition, partition_nodes(nodes, partition["PartitionName"]))

    # default: MaxMemPerCPU x the largest node's usable CPUs (CPUEfctv), within its memory
    assert limits(None) == ResourceLimits("partition cpu", max_mem_gb=4000 * 46 / 1024,
                                          max_time_min=2 * 24 * 60, max_cpus=46, max_nodes=8)
    # MaxMemPerNode; no CPUEfctv (older Slurm): CPUTot
    assert limits("gpu") == ResourceLimits("partition gpu", max_mem_gb=256000 / 1024,
                                           max_time_min=12 * 60, max_cpus=64, max_nodes=1)
    # no memory limit: the largest node's RealMemory; MaxTime in plain minutes
    assert limits("short") == ResourceLimits("partition short", max_mem_gb=512000 / 1024,
                                             max_time_min=30, max_cpus=64, max_nodes=1)
    assert pick_partition(partitions, "nope") is None


def test_a_limit_above_the_nodes_is_the_nodes() -> None:
    partition = {"PartitionName": "p", "MaxMemPerNode": "1000000"}
    nodes = [{"NodeName": "n", "CPUTot": "4", "RealMemory": "8192", "Partitions": "p"}]
    assert resource_limits(partition, nodes).max_mem_gb == 8.0
    assert resource_limits(partition, []) == ResourceLimits(
        "partition p", max_mem_gb=1000000 / 1024)  # nodes unknown: the partition's word


def test_default_partition_without_default_yes() -> None:
    only = parse_records("PartitionName=solo Default=NO MaxTime=1:00:00\n")
    assert pick_partition(only, None) == only[0]  # the only one
    assert pick_partition(parse_records(SITE_PARTITIONS.replace("Default=YES", "Default=NO")),
                          None) is None
    assert pick_partition([], None) is None


@pytest.mark.parametrize(("text", "minutes"), [
    ("UNLIMITED", None), ("INFINITE", None), ("NONE", None), ("", None),
    ("30", 30), ("90:00", 90), ("00:00:30", 1), ("00:00:59", 1), ("00:01:59", 1),
    ("01:30:00", 90), ("12:00:00", 720), ("1-00:00:00", 1440), ("7-00:00:00", 10080),
    ("1-12", 2160), ("1-12:30", 2190), ("2-03:04:05", 2 * 1440 + 3 * 60 + 4),
    ("0", None), ("1:2:3:4", None), ("x-1", None), ("soon", None),
])
def test_max_time_formats(text: str, minutes: int | None) -> None:
    assert parse_time_min(text) == minutes


@pytest.mark.parametrize(("text", "mb"), [
    ("24105", 24105.0), ("24105M", 24105.0), ("2G", 2048.0), ("1T", 1024.0 ** 2),
    ("512K", 0.5), ("UNLIMITED", None), ("0", None), ("", None), ("lots", None),
])
def test_memory_formats(text: str, mb: float | None) -> None:
    assert parse_mem_mb(text) == mb


class ScontrolRunner:
    """The runner seam: answers `scontrol show partition|node`, counts the calls."""

    def __init__(self, partitions: str, nodes: str, rc: int = 0, stderr: str = "") -> None:
        self.partitions, self.nodes, self.rc, self.stderr = partitions, nodes, rc, stderr
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[:3] == ["scontrol", "show", "partition"]:
            name = argv[3] if len(argv) > 4 else None
            lines = [ln for ln in self.partitions.splitlines()
                     if name is None or ln.startswith(f"PartitionName={name} ")]
            if self.rc or (name and not lines):
                return subprocess.CompletedProcess(
                    argv, self.rc or 1, "", self.stderr or f"Partition {name} not found\n")
            return subprocess.CompletedProcess(argv, 0, "".join(f"{ln}\n" for ln in lines), "")
        if argv[:3] == ["scontrol", "show", "node"]:
            return subprocess.CompletedProcess(argv, 0, self.nodes, "")
        raise AssertionError(f"unexpected command {argv}")


def test_provider_reads_the_default_partition_once() -> None:
    runner = ScontrolRunner(LOCAL_PARTITIONS, LOCAL_NODES)
    provider = SlurmProvider(runner=runner)
    limits = provider.limits(Resources())
    assert limits.where == "partition debug" and limits.max_cpus == 2
    assert limits.max_mem_gb == pytest.approx(23.54, abs=0.01)
    assert provider.limits(Resources(mem_gb=4, cpus=2)) is limits  # cached
    assert runner.calls == [["scontrol", "show", "partition", "-o"],
                            ["scontrol", "show", "node", "-o"]]
    assert provider.calls["scontrol"] == 2
    assert limits.violations(Resources(mem_gb=64, cpus=4))  # never fits: refused early


def test_provider_reads_the_configured_partition() -> None:
    runner = ScontrolRunner(SITE_PARTITIONS, SITE_NODES)
    limits = SlurmProvider(SlurmSettings(partition="gpu"), runner=runner).limits(Resources())
    assert runner.calls[0] == ["scontrol", "show", "partition", "gpu", "-o"]
    assert (limits.where, limits.max_time_min, limits.max_cpus) == ("partition gpu", 720, 64)


@pytest.mark.parametrize("runner", [
    ScontrolRunner(SITE_PARTITIONS, SITE_NODES, rc=1,
                   stderr="slurm_load_partitions: Unable to contact slurm controller\n"),
    ScontrolRunner("", ""),  # no partition at all
])
def test_provider_without_an_answer_knows_no_limits(runner: ScontrolRunner,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    limits = SlurmProvider(runner=runner).limits(Resources())
    assert limits == ResourceLimits(where="the default partition")
    assert "cannot read the limits of the default partition" in caplog.text


def test_provider_with_an_unknown_partition_or_no_scontrol(
        caplog: pytest.LogCaptureFixture) -> None:
    runner = ScontrolRunner(SITE_PARTITIONS, SITE_NODES)
    limits = SlurmProvider(SlurmSettings(partition="nope"), runner=runner).limits(Resources())
    assert limits == ResourceLimits(where="partition nope") and "not found" in caplog.text

    def missing(argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    def hangs(argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, 120)

    for broken in (missing, hangs):
        assert SlurmProvider(runner=broken).limits(Resources()) == ResourceLimits(
            where="the default partition")
