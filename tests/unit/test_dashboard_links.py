"""`hpcorch status` asks the sweep's provider for dashboard pages; it names no provider."""

from __future__ import annotations

from pathlib import Path

from hpcorch.cli.inspect_cmds import dashboard_links
from hpcorch.spec import RunState
from hpcorch.store.ledger import SweepInfo, write_ledger
from hpcorch.store.rows import RunRow


def _row(job_id: str) -> RunRow:
    return RunRow(run_key="k" + job_id[-1], sweep_id="s1", num=0, state=RunState.SUCCEEDED,
                  provider="ray", job_id=job_id, run_dir="/x", overrides=())


def _sweep(tmp_path: Path, provider: str, settings: dict[str, object]) -> str:
    write_ledger(SweepInfo("s1", str(tmp_path), provider, 0.0, provider_settings=settings))
    return str(tmp_path)


def test_ray_sweeps_link_each_job_once(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, "ray", {"name": "ray", "address": "http://127.0.0.1:8265/"})
    rows = [_row("hpcorch-abc#0"), _row("hpcorch-abc#1"), _row("hpcorch-def#2")]
    assert dashboard_links(sweep, rows) == ["http://127.0.0.1:8265/#/jobs/hpcorch-abc",
                                            "http://127.0.0.1:8265/#/jobs/hpcorch-def"]


def test_no_links_without_a_dashboard(tmp_path: Path) -> None:
    # A Ray started for the sweep is gone with it; local has no dashboard at all.
    assert dashboard_links(_sweep(tmp_path / "a", "ray", {"name": "ray"}), [_row("j#0")]) == []
    assert dashboard_links(_sweep(tmp_path / "b", "local", {"name": "local"}),
                           [_row("123")]) == []
