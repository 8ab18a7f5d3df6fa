"""Batch mode on a Dask cluster: a LocalCluster on loopback (tcp://127.0.0.1, worker threads in this process)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_batch import CASE_FILES, FakePipeline, copy_case, install_fake, make_case, read_summary, write_heads

import medfuse
import medfuse.inference
from medfuse import batch
from medfuse.batch import run_batch
from medfuse.errors import UsageError
from medfuse.options import FuseOptions

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A small cluster on loopback: one worker with two threads, running in this process."""
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, host="127.0.0.1", protocol="tcp", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    return install_fake(monkeypatch)


def test_cases_run_as_dask_tasks(
    tmp_path: Path, scheduler: str, fake: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert scheduler.startswith("tcp://127.0.0.1:")
    monkeypatch.chdir(tmp_path)
    studies, out = Path("studies"), Path("out")
    for index in range(4):
        make_case(studies, f"case{index}")
    make_case(studies, "case9-bad", "invalid")
    out.mkdir()
    result = run_batch(studies, out, FuseOptions(method="laplacian"), scheduler=scheduler)
    # the workers may run elsewhere: they get absolute paths
    assert all(call["mri"].is_absolute() and call["output"].is_absolute() for call in fake.calls)
    rows = read_summary(out / "summary.csv")
    assert [(r["case"], r["status"]) for r in rows] == [(f"case{i}", "ok") for i in range(4)] + [
        ("case9-bad", "failed")
    ]
    assert "the PET is constant" in rows[-1]["error"]
    assert [c.case for c in result.cases] == [r["case"] for r in rows]  # case order, not completion order
    assert len(fake.loads) == 1  # the worker built its fuser once and reused it for every task
    assert sorted(p.name for p in out.iterdir()) == [*(f"case{i}" for i in range(4)), "index.html", "summary.csv"]

    resumed = run_batch(studies, out, FuseOptions(method="laplacian"), scheduler=scheduler, skip_existing=True)
    assert [c.status for c in resumed.cases] == ["skipped"] * 4 + ["failed"]


def test_worker_fuser_failure_fails_the_cases_cleanly(
    tmp_path: Path, scheduler: str, fake: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(options: FuseOptions) -> object:
        raise medfuse.errors.WeightsError("weights.safetensors: SHA-256 mismatch; download the weights again.")

    monkeypatch.setattr(medfuse.inference, "load_fuser", broken)
    make_case(tmp_path / "studies", "one")
    (tmp_path / "out").mkdir()
    result = run_batch(tmp_path / "studies", tmp_path / "out", FuseOptions(), scheduler=scheduler)
    assert result.cases[0].status == "failed" and "SHA-256 mismatch" in result.cases[0].error
    assert fake.calls == []


def test_real_pipeline_on_the_cluster(tmp_path: Path, scheduler: str) -> None:
    mri, pet = write_heads(tmp_path)
    studies, out = tmp_path / "studies", tmp_path / "out"
    copy_case(studies, "head", mri, pet)
    out.mkdir()
    result = run_batch(studies, out, FuseOptions(method="laplacian"), scheduler=scheduler)
    assert result.cases[0].status == "ok", result.cases[0].error
    assert sorted(p.name for p in (out / "head").iterdir()) == CASE_FILES


def test_unreachable_scheduler_and_missing_dask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_case(tmp_path / "studies", "one")
    monkeypatch.setattr(batch.workers, "_CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(UsageError, match=r"--scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler"):
        run_batch(tmp_path / "studies", tmp_path / "out", FuseOptions(), scheduler="tcp://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UsageError, match=r'pip install "medfuse\[distributed\]"'):
        run_batch(tmp_path / "studies", tmp_path / "out", FuseOptions(), scheduler="tcp://127.0.0.1:9")
