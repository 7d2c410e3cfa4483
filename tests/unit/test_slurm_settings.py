"""Slurm provider settings: typed, validated before anything is submitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hpcorch.errors import ConfigError
from hpcorch.providers import PLANNED, PROVIDERS, create_provider, provider_class
from hpcorch.providers.slurm import SlurmProvider, SlurmSettings
from hpcorch.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "hpcorch" / "conf" / "provider" / "slurm.yaml"


def parse(**values: Any) -> SlurmSettings:
    return parse_settings(SlurmSettings, {"name": "slurm", **values}, "provider")


def test_registered_and_no_longer_planned() -> None:
    assert PROVIDERS["slurm"][1] == "slurm"
    assert "slurm" not in PLANNED
    assert provider_class("slurm") is SlurmProvider


def test_shipped_yaml_parses_to_the_defaults() -> None:
    values = yaml.safe_load(SHIPPED.read_text())
    assert parse_settings(SlurmSettings, values, "provider") == SlurmSettings()


def test_site_profile_in_the_example_app_overrides_the_shipped_one() -> None:
    profile = yaml.safe_load((ROOT / "conf" / "provider" / "mycluster.yaml").read_text())
    assert profile["defaults"][0] == "slurm"
    values = {**yaml.safe_load(SHIPPED.read_text()),
              **{k: v for k, v in profile.items() if k != "defaults"}}
    settings = parse_settings(SlurmSettings, values, "provider")
    assert settings.partition == "debug" and settings.setup


def test_create_provider_does_no_io() -> None:
    calls: list[list[str]] = []
    provider = create_provider({"name": "slurm", "partition": "debug"},
                               runner=lambda argv, **_: calls.append(list(argv)))
    assert isinstance(provider, SlurmProvider) and calls == []


def test_typo_in_a_setting_names_the_close_match() -> None:
    with pytest.raises(ConfigError, match=r"provider\.partiton.*did you mean 'partition'"):
        parse(partiton="debug")


def test_typo_in_extra_lists_close_sbatch_options() -> None:
    with pytest.raises(ConfigError) as err:
        parse(extra={"mail_typ": "END"})
    assert err.value.key == "provider.extra.mail_typ"
    assert "did you mean mail_type" in str(err.value)
    assert "mail_user" in err.value.allowed  # the list of valid names


def test_extra_accepts_dashes_and_drops_false() -> None:
    from hpcorch.providers.slurm.settings import normalized_extra

    assert normalized_extra({"mail-type": "END", "--gres": "gpu:2", "wckey": False}) == {
        "mail_type": "END", "gres": "gpu:2"}


@pytest.mark.parametrize("key,hint", [("partition", "provider.partition"),
                                      ("mem", "resources.mem_gb"),
                                      ("cpus_per_task", "resources.cpus"),
                                      ("job-name", "sweep id")])
def test_extra_refuses_what_hpcorch_manages(key: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        parse(extra={key: "x"})


def test_values_that_would_break_the_script_are_refused() -> None:
    with pytest.raises(ConfigError, match="single line"):
        parse(extra={"comment": "a\n#SBATCH --qos=evil"})
    with pytest.raises(ConfigError, match="single line"):
        parse(partition="debug\nrm -rf /")
    with pytest.raises(ConfigError, match=r"setup\[1\].*not a complete shell line"):
        parse(setup=["module load x", "echo 'unbalanced"])
    with pytest.raises(ConfigError, match="a string, a number or true"):
        parse(extra={"gres": ["gpu:1"]})


@pytest.mark.parametrize("values,key", [
    ({"pack": 0}, "pack"), ({"max_requeues": -1}, "max_requeues"),
    ({"array_throttle": 0}, "array_throttle"), ({"poll_interval": 0}, "poll_interval"),
    ({"query_interval": 10, "max_query_interval": 5}, "max_query_interval"),
    ({"srun": "sometimes"}, "srun"), ({"signal_grace_s": 0}, "signal_grace_s"),
    ({"requeue_on_timeout": "sometimes"}, "requeue_on_timeout"),
    ({"requeue_on_timeout": True}, "requeue_on_timeout"),
])
def test_ranges(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(**values)
    assert err.value.key == f"provider.{key}"


def test_extra_passes_any_sbatch_option_through() -> None:
    """Options submitit has no named parameter for reach sbatch as its additional_parameters."""
    from hpcorch.providers.slurm.accounting import ClusterLimits
    from hpcorch.providers.slurm.script import executor_parameters, plan_arrays
    from hpcorch.providers.slurm.settings import normalized_extra, sbatch_parameters
    from hpcorch.providers.slurm.submission import executor_for
    from hpcorch.providers.slurm.submitit_script import render
    from hpcorch.spec import RunSpec

    assert {"partition", "gres", "mem_per_cpu"} <= sbatch_parameters()  # submitit's list was read
    extra = normalized_extra({"reservation": "r1", "hint": "nomultithread",
                              "gpu_bind": "closest", "licenses": "matlab:1", "mail-type": "END"})
    assert extra == {"reservation": "r1", "hint": "nomultithread", "gpu_bind": "closest",
                     "licenses": "matlab:1", "mail_type": "END"}
    settings = SlurmSettings(extra={"gpu_bind": "closest", "mail-type": "END",
                                    "reservation": "my res"})
    run = RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                  run_dir="/sw/0", command=("python", "-c", "pass"))
    [plan] = plan_arrays([run], settings, ClusterLimits())
    params = executor_parameters(plan, settings, "python")
    assert params["mail_type"] == "END"  # submitit's own name
    assert {"gpu_bind": "closest", "reservation": "my res"}.items() <= (
        params["additional_parameters"].items())
    text = render(executor_for(plan, settings, "python", offline=True), 1).splitlines()
    # spelled as sbatch spells them (`a_b` -> `--a-b`), values shell-quoted
    for line in ("#SBATCH --gpu-bind=closest", "#SBATCH --mail-type=END",
                 "#SBATCH --reservation='my res'"):
        assert line in text, line


@pytest.mark.parametrize(("extra", "message"), [
    ({"mail_typ": "END"}, "did you mean mail_type?"),
    ({"exclude": "n1"}, "use provider.exclude"),
    ({"bad key": 1}, "must be an sbatch long option name"),
])
def test_extra_refusals_name_the_key(extra: dict[str, Any], message: str) -> None:
    from hpcorch.providers.slurm.settings import normalized_extra

    with pytest.raises(ConfigError, match=message) as err:
        normalized_extra(extra)
    assert f"provider.extra.{next(iter(extra))}" in str(err.value)
