"""Batch mode: finding cases and their inputs, failure isolation, resume, summary, exit codes.

Most tests replace the pipeline with a fast fake (a stand-in ``medfuse.pipeline`` module that writes
the five case outputs in one transaction, or fails on request), so they exercise batch.py itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from typer.testing import CliRunner

import medfuse
import medfuse.inference
from medfuse import batch
from medfuse.atomic import output_transaction, sibling
from medfuse.batch import Case, locate_inputs, read_pairs, run_batch
from medfuse.cli import app
from medfuse.errors import InvalidInputError, OutputError, UsageError, WeightsError
from medfuse.options import FuseOptions

CASE_FILES = [
    "fused.nii.gz",
    "fused_overlay.nii.gz",
    "pet_on_mri.nii.gz",
    "pet_to_mri.tfm",
    "preview.png",
    "qc.html",
    "report.json",
]


class FakePipeline:
    """Stands in for medfuse.pipeline: MRI files hold a word saying what the fusion should do."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.loads: list[FuseOptions] = []  # fuser loads, counted by the fixtures

    def fuse_files(self, mri: Path, pet: Path, output: Path, options: FuseOptions, fuser: Any = None) -> None:
        self.calls.append(
            {"mri": Path(mri), "pet": Path(pet), "output": Path(output), "options": options, "fuser": fuser}
        )
        behaviour = Path(mri).read_text() if Path(mri).is_file() else "ok"
        if behaviour == "invalid":
            raise InvalidInputError(f"{pet}: the PET is constant (every voxel is 3); check the export.")
        if behaviour == "crash":
            raise ZeroDivisionError("division by zero")
        if behaviour == "interrupt":
            raise KeyboardInterrupt
        targets = [output, options.preview, options.save_transform, options.report, options.save_pet]
        if options.qc:
            targets.append(options.qc)
        if options.overlay:
            targets.append(sibling(output, "_overlay"))
        with output_transaction(options.overwrite) as transaction:
            for index, target in enumerate(targets):
                transaction.write(target, lambda path, text=behaviour: path.write_text(text))
                if behaviour == "disk-full" and index == 2:
                    raise OutputError(f"{target}: could not be written (No space left on device).")


def install_fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    """Install the fake pipeline and a fuser loader that counts how often a process builds its fuser."""
    pipeline = FakePipeline()
    module = types.SimpleNamespace(fuse_files=pipeline.fuse_files)
    monkeypatch.setitem(sys.modules, "medfuse.pipeline", module)
    monkeypatch.setattr(medfuse, "pipeline", module, raising=False)

    def load(options: FuseOptions) -> object:
        pipeline.loads.append(options)
        return object()

    monkeypatch.setattr(medfuse.inference, "load_fuser", load)
    monkeypatch.setattr(batch.workers, "_FUSERS", {})
    monkeypatch.setattr(batch.run, "usable_cpus", lambda: 1)  # the fake lives here: --workers auto plans 1 process
    return pipeline


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    return install_fake(monkeypatch)


def make_case(root: Path, name: str, behaviour: str = "ok", mri: str = "mri.nii.gz", pet: str = "pet.nii.gz") -> Path:
    folder = root / name
    for relative, text in ((mri, behaviour), (pet, "pet")):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


def read_summary(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_inputs_found_by_name_in_folders_and_subfolders(tmp_path: Path) -> None:
    flat = make_case(tmp_path, "flat", mri="T1w.nii", pet="PET_AC.nrrd")
    assert locate_inputs(Case("flat", folder=flat)) == (flat / "T1w.nii", flat / "PET_AC.nrrd")
    nested = make_case(tmp_path, "nested", mri="anat/t1_mprage.mha", pet="pet/raw/series.nii.gz")
    (nested / "notes.txt").write_text("pet scan notes")
    expected = (nested / "anat" / "t1_mprage.mha", nested / "pet" / "raw" / "series.nii.gz")
    assert locate_inputs(Case("nested", folder=nested)) == expected
    (nested / "Pet_DICOM").mkdir()  # a matching folder without volume files counts as a (DICOM) input
    with pytest.raises(InvalidInputError, match=r"several PET candidates match pet\* \(Pet_DICOM, pet/raw/series"):
        locate_inputs(Case("nested", folder=nested))
    custom = make_case(tmp_path, "custom", mri="anatomy.nii.gz", pet="fdg.nii.gz")
    found = locate_inputs(Case("custom", folder=custom), mri_globs=["anat*"], pet_globs=["fdg*", "pet*"])
    assert found == (custom / "anatomy.nii.gz", custom / "fdg.nii.gz")


def test_missing_or_ambiguous_inputs_are_named(tmp_path: Path) -> None:
    twice = make_case(tmp_path, "twice")
    (twice / "t1.nii.gz").write_text("ok")
    with pytest.raises(InvalidInputError, match=r"several MRI candidates match mri\*, t1\* \(mri.nii.gz, t1.nii.gz\)"):
        locate_inputs(Case("twice", folder=twice))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "mri.nii.gz").write_text("ok")
    with pytest.raises(InvalidInputError, match=r"no PET found \(no DICOM series of modality PT or NM and no volume"):
        locate_inputs(Case("lonely", folder=lonely))


def test_inputs_found_by_dicom_modality(tmp_path: Path) -> None:
    from dicom_factory import make_series
    from dicom_factory import phantom as dicom_phantom

    mixed = tmp_path / "mixed"  # both series in one folder, names say nothing
    make_series(mixed, dicom_phantom((4, 6, 6)), modality="MR", prefix="A")
    make_series(mixed, dicom_phantom((4, 6, 6), kind="pet"), modality="PT", prefix="B")
    assert locate_inputs(Case("mixed", folder=mixed)) == (mixed, mixed)
    split = tmp_path / "split"  # modality wins over misleading names; SPECT (NM) counts as the PET
    make_series(split / "pet_looking_name" / "a", dicom_phantom((4, 6, 6)), modality="MR")
    make_series(split / "pet_looking_name" / "b", dicom_phantom((3, 6, 6)), modality="MR", description="T2")
    make_series(split / "x", dicom_phantom((4, 6, 6), kind="pet"), modality="NM")
    assert locate_inputs(Case("split", folder=split)) == (split / "pet_looking_name", split / "x")
    half = tmp_path / "half"  # an MRI in DICOM and a PET found by its name
    make_series(half / "dicom", dicom_phantom((4, 6, 6)), modality="MR")
    (half / "pet.nii.gz").write_text("pet")
    assert locate_inputs(Case("half", folder=half)) == (half / "dicom", half / "pet.nii.gz")


def test_pairs_csv(tmp_path: Path) -> None:
    pairs = tmp_path / "lists" / "pairs.csv"
    pairs.parent.mkdir()
    pairs.write_text("Case;MRI;PET;note\nsub-01;../data/a_mri.nii.gz;/abs/pet.nii.gz;x\n\n;;;\nsub-02;m.nii;p.nii;\n")
    cases = read_pairs(pairs)
    assert [c.name for c in cases] == ["sub-01", "sub-02"]
    assert cases[0].mri == pairs.parent / "../data/a_mri.nii.gz" and cases[0].pet == Path("/abs/pet.nii.gz")
    assert cases[1].mri == pairs.parent / "m.nii"
    bad = [
        ("case,mri\na,b\n", r"lacks the column\(s\) pet"),
        ("case,mri,pet\na,m,p\na,m2,p2\n", "line 3: case 'a' appears twice"),
        ("case,mri,pet\n../up,m,p\n", "line 2: case name '../up' cannot be used as an output folder name"),
        ("case,mri,pet\nb,m,\n", "needs both an mri and a pet path"),
        ("case,mri,pet\n", "lists no cases"),
    ]
    for text, message in bad:
        pairs.write_text(text)
        with pytest.raises(InvalidInputError, match=message):
            read_pairs(pairs)


def test_failures_are_isolated_and_summarised(tmp_path: Path, fake: FakePipeline) -> None:
    studies = tmp_path / "studies"
    for name, behaviour in (("a-ok", "ok"), ("b-invalid", "invalid"), ("c-crash", "crash"), ("d-full", "disk-full")):
        make_case(studies, name, behaviour)
    (studies / "e-empty").mkdir()
    (studies / ".hidden").mkdir()
    (studies / "readme.txt").write_text("not a case")
    out = tmp_path / "out"
    options = FuseOptions(method="laplacian", register="affine", pet_window=(1.0, 5.0), overwrite=False)
    with pytest.warns(UserWarning, match="output folder did not exist and was created"):
        result = run_batch(studies, out, options)
    rows = {row["case"]: row for row in read_summary(out / "summary.csv")}
    assert list(rows) == ["a-ok", "b-invalid", "c-crash", "d-full", "e-empty"]
    assert {name: row["status"] for name, row in rows.items()} == {
        "a-ok": "ok",
        "b-invalid": "failed",
        "c-crash": "failed",
        "d-full": "failed",
        "e-empty": "failed",
    }
    assert rows["b-invalid"]["error"].endswith("the PET is constant (every voxel is 3); check the export.")
    assert rows["c-crash"]["error"].startswith("unexpected internal error (ZeroDivisionError: division by zero)")
    assert "No space left on device" in rows["d-full"]["error"]
    assert "no MRI found" in rows["e-empty"]["error"]
    written = [
        "fused.nii.gz",
        "fused_overlay.nii.gz",
        "preview.png",
        "pet_to_mri.tfm",
        "report.json",
        "pet_on_mri.nii.gz",
        "qc.html",
    ]
    assert rows["a-ok"]["outputs"].split(";") == [str(out / "a-ok" / name) for name in written]
    assert float(rows["a-ok"]["seconds"]) >= 0 and rows["a-ok"]["error"] == ""
    assert sorted(p.name for p in out.iterdir()) == ["a-ok", "index.html", "summary.csv"]  # nothing of failed cases
    assert sorted(p.name for p in (out / "a-ok").iterdir()) == CASE_FILES
    assert len(fake.loads) == 1  # the model is loaded once for the whole batch
    assert len({id(call["fuser"]) for call in fake.calls}) == 1
    first = fake.calls[0]["options"]
    assert (first.method, first.register, first.pet_window) == ("laplacian", "affine", (1.0, 5.0))
    assert first.preview == out / "a-ok" / "preview.png" and first.report == out / "a-ok" / "report.json"
    assert first.save_transform == out / "a-ok" / "pet_to_mri.tfm"
    assert first.save_pet == out / "a-ok" / "pet_on_mri.nii.gz"
    assert [c.status for c in result.cases] == ["ok", "failed", "failed", "failed", "failed"] and len(
        result.failed
    ) == 4


def test_resume_skip_existing_and_overwrite(tmp_path: Path, fake: FakePipeline) -> None:
    studies, out = tmp_path / "studies", tmp_path / "out"
    make_case(studies, "one")
    make_case(studies, "two", "invalid")
    out.mkdir()
    run_batch(studies, out, FuseOptions())
    done = tree(out / "one")
    (studies / "two" / "mri.nii.gz").write_text("ok")  # the user fixed case two
    calls = len(fake.calls)

    again = run_batch(studies, out, FuseOptions())  # neither flag: finished cases are refused, untouched
    assert [c.status for c in again.cases] == ["failed", "ok"]
    assert "pass --skip-existing to keep finished cases or --overwrite" in again.cases[0].error
    assert tree(out / "one") == done and len(fake.calls) == calls + 1

    resumed = run_batch(studies, out, FuseOptions(), skip_existing=True)
    assert [c.status for c in resumed.cases] == ["skipped", "skipped"] and len(fake.calls) == calls + 1
    assert [row["status"] for row in read_summary(out / "summary.csv")] == ["skipped", "skipped"]

    redone = run_batch(studies, out, FuseOptions(overwrite=True))
    assert [c.status for c in redone.cases] == ["ok", "ok"] and len(fake.calls) == calls + 3


def test_interrupt_keeps_finished_cases_and_writes_the_summary(tmp_path: Path, fake: FakePipeline) -> None:
    studies, out = tmp_path / "studies", tmp_path / "out"
    for name, behaviour in (("a", "ok"), ("b", "interrupt"), ("c", "ok")):
        make_case(studies, name, behaviour)
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_batch(studies, out, FuseOptions())
    rows = read_summary(out / "summary.csv")
    assert [(r["case"], r["status"]) for r in rows] == [("a", "ok"), ("b", "skipped"), ("c", "skipped")]
    assert rows[1]["error"] == "not run: the batch was interrupted."
    assert sorted(p.name for p in out.iterdir()) == ["a", "index.html", "summary.csv"]


def test_spawned_workers_hold_one_case_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker gets its next case when its case ends; the rest stays for this process, taken from the back."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from medfuse.batch.task import CaseResult, CaseTask

    started: list[str] = []
    release = {name: threading.Event() for name in "abcde"}

    def fake_worker(task: CaseTask) -> CaseResult:
        started.append(task.case.name)
        release[task.case.name].wait(10)
        return CaseResult(task.case.name, "ok")

    def until(condition: Any) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert condition()

    monkeypatch.setattr(batch.workers, "run_case_on_worker", fake_worker)
    tasks = [CaseTask(Case(name, tmp_path), tmp_path, FuseOptions()) for name in "abcde"]
    with ThreadPoolExecutor(1) as pool:  # stands in for one spawned worker process
        dispatch = batch.workers._Dispatch(pool, tasks, spawned_workers=1)
        until(lambda: started == ["a"])
        assert [dispatch.take_last().case.name for _ in range(2)] == ["e", "d"]  # type: ignore[union-attr]
        assert list(dispatch.reports()) == [] and dispatch.running()
        release["a"].set()
        assert [r.case for r in dispatch.reports(wait=True)] == ["a"]
        until(lambda: started == ["a", "b"])  # handed out when "a" ended, not queued ahead
        assert dispatch.take_last().case.name == "c"  # type: ignore[union-attr]
        assert dispatch.take_last() is None
        release["b"].set()
        assert [r.case for r in dispatch.reports(wait=True)] == ["b"]
        assert not dispatch.running() and started == ["a", "b"]


def test_cases_a_broken_pool_cannot_take_stay_for_this_process(tmp_path: Path) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from medfuse.batch.task import CaseTask

    class BrokenPool:
        def submit(self, *args: Any) -> None:
            raise BrokenProcessPool("a worker died")

    tasks = [CaseTask(Case(name, tmp_path), tmp_path, FuseOptions()) for name in "ab"]
    dispatch = batch.workers._Dispatch(BrokenPool(), tasks, spawned_workers=1)
    assert not dispatch.running()
    assert [dispatch.take_last().case.name for _ in range(2)] == ["b", "a"]  # type: ignore[union-attr]


def test_ctrl_c_in_a_worker_process(tmp_path: Path, fake: FakePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker-side Ctrl-C: the running case rolls back (or counts as done if committed), queued ones are skipped."""
    import threading

    monkeypatch.setattr(batch.workers, "_STOP", threading.Event())
    studies, out = tmp_path / "studies", tmp_path / "out"
    tasks = {}
    for name, behaviour in (("a", "interrupt"), ("b", "ok")):
        make_case(studies, name, behaviour)
        tasks[name] = batch.CaseTask(Case(name, folder=studies / name), out, FuseOptions())
    batch.workers._interrupt_worker(2, None)  # while idle: only remembered
    assert batch.workers._STOP.is_set()
    assert batch.run_case_on_worker(tasks["b"]).error == "not run: the batch was interrupted."
    batch.workers._STOP.clear()
    interrupted = batch.run_case_on_worker(tasks["a"])
    assert (interrupted.status, interrupted.error) == (
        "skipped",
        "interrupted while running; nothing was written for it.",
    )
    assert batch.workers._STOP.is_set() and not out.exists()
    batch.workers._STOP.clear()
    batch.run_case_on_worker(tasks["b"])  # interrupted right after its outputs were committed: it is done
    done = batch.workers._interrupted(tasks["b"], started=0.0)
    assert done.status == "ok" and len(done.outputs) == len(CASE_FILES)
    assert batch.workers._interrupted(tasks["b"], started=time.time() + 60).status == "skipped"


def test_batch_refuses_bad_folders_and_options(tmp_path: Path, fake: FakePipeline) -> None:
    studies = tmp_path / "studies"
    make_case(studies, "one")
    with pytest.raises(OutputError, match="is inside the input folder"):
        run_batch(studies, studies / "out", FuseOptions())
    with pytest.raises(UsageError, match="not both or neither"):
        run_batch(None, tmp_path / "out", FuseOptions())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="holds no case folders"):
        run_batch(empty, tmp_path / "out", FuseOptions())
    with pytest.raises(UsageError, match="with --scheduler the Dask cluster sets the parallelism"):
        run_batch(studies, tmp_path / "out", FuseOptions(), workers=2, scheduler="tcp://127.0.0.1:1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "studies"]


def test_weights_or_device_problems_stop_before_anything_is_written(
    tmp_path: Path, fake: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(options: FuseOptions) -> object:
        raise WeightsError("weights.safetensors: SHA-256 mismatch; download the weights again.")

    monkeypatch.setattr(medfuse.inference, "load_fuser", broken)
    make_case(tmp_path / "studies", "one")
    for workers in (1, 2):
        with pytest.raises(WeightsError, match="SHA-256 mismatch"):
            run_batch(tmp_path / "studies", tmp_path / "out", FuseOptions(), workers=workers)
    assert not (tmp_path / "out").exists() and fake.calls == []


def test_cli_batch_exit_codes_and_table(tmp_path: Path, fake: FakePipeline) -> None:
    studies, out = tmp_path / "studies", tmp_path / "out"
    make_case(studies, "good")
    runner = CliRunner()
    args = ["batch", str(studies), "-o", str(out), "--method", "laplacian", "--pet-window", "0", "9"]
    result = runner.invoke(app, [*args, "--register", "none", "--no-overlay", "--suv", "--frame", "sum"])
    assert result.exit_code == 0, result.output
    assert "1 ok, 0 failed, 0 skipped" in result.output and "good" in result.output
    options = fake.calls[0]["options"]
    assert (options.register, options.overlay, options.suv, options.frame) == ("none", False, True, "sum")
    assert sorted(p.name for p in (out / "good").iterdir()) == sorted(set(CASE_FILES) - {"fused_overlay.nii.gz"})

    make_case(studies, "bad", "invalid")
    result = runner.invoke(app, ["batch", str(studies), "-o", str(out), "--skip-existing", "--no-overlay"])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "1 of 2 cases failed; see" in flat and "summary.csv" in flat and "the PET is constant" in flat

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"case,mri,pet\ngood2,{studies / 'good' / 'mri.nii.gz'},{studies / 'good' / 'pet.nii.gz'}\n")
    result = runner.invoke(app, ["--quiet", "batch", "--pairs", str(pairs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "good2" / "fused.nii.gz").exists()

    renamed = tmp_path / "renamed"
    make_case(renamed, "x", mri="anat/anatomy.nii.gz", pet="FDG.nii.gz")
    globs = ["--mri-glob", "anat*", "--pet-glob", "fdg*", "--pet-glob", "pet*"]
    result = runner.invoke(app, ["batch", str(renamed), "-o", str(tmp_path / "out-renamed"), *globs])
    assert result.exit_code == 0, result.output
    assert fake.calls[-1]["mri"] == renamed / "x" / "anat" / "anatomy.nii.gz"

    result = runner.invoke(app, ["batch", str(studies), "--pairs", str(pairs), "-o", str(out)])
    assert result.exit_code == 2 and "not both or neither" in result.output
    result = runner.invoke(app, ["batch", str(tmp_path / "nowhere"), "-o", str(out)])
    assert result.exit_code == 3 and "the input folder does not exist" in result.output


# ---- with the real pipeline (Laplacian fusion, tiny synthetic heads) ----------------------------------
def write_heads(folder: Path) -> tuple[Path, Path]:
    """A small MRI and a misaligned, coarser PET of the synthetic head, written as NIfTI."""
    from synthetic import Grid, phantom_mri, phantom_pet, rigid

    mri, pet = folder / "mri.nii.gz", folder / "pet.nii.gz"
    sitk.WriteImage(phantom_mri(Grid((36, 44, 36), (5.0, 5.0, 5.0))), str(mri))
    moved = rigid((0.0, 0.0, 4.0), (4.0, -3.0, 2.0))
    sitk.WriteImage(phantom_pet(Grid((28, 32, 28), (7.0, 7.0, 7.0)), transform=moved), str(pet))
    return mri, pet


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_heads(tmp_path_factory.mktemp("heads"))


def copy_case(root: Path, name: str, mri: Path, pet: Path, mri_name: str = "mri.nii.gz") -> None:
    (root / name / "pet").mkdir(parents=True)
    shutil.copy(mri, root / name / mri_name)
    shutil.copy(pet, root / name / "pet" / "pet.nii.gz")


def test_real_pipeline_end_to_end(tmp_path: Path, heads: tuple[Path, Path]) -> None:
    mri, pet = heads
    studies, out = tmp_path / "studies", tmp_path / "out"
    copy_case(studies, "good", mri, pet, mri_name="T1w.nii.gz")
    copy_case(studies, "flat-pet", mri, pet)
    sitk.WriteImage(sitk.Image([6, 6, 6], sitk.sitkFloat32) + 3.0, str(studies / "flat-pet" / "pet" / "pet.nii.gz"))
    before = tree(studies)
    out.mkdir()
    result = run_batch(studies, out, FuseOptions(method="laplacian"))
    assert [(c.case, c.status) for c in result.cases] == [("flat-pet", "failed"), ("good", "ok")]
    assert "constant" in result.cases[0].error and str(studies / "flat-pet") in result.cases[0].error
    assert sorted(p.name for p in out.iterdir()) == ["good", "index.html", "summary.csv"]
    assert sorted(p.name for p in (out / "good").iterdir()) == CASE_FILES
    reference, fused = sitk.ReadImage(str(mri)), sitk.ReadImage(str(out / "good" / "fused.nii.gz"))
    assert fused.GetSize() == reference.GetSize()
    for a, b in ((fused.GetSpacing(), reference.GetSpacing()), (fused.GetOrigin(), reference.GetOrigin())):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(fused.GetDirection(), reference.GetDirection(), atol=1e-6)
    report = json.loads((out / "good" / "report.json").read_text())
    assert report["outputs"]["preview"] == str(out / "good" / "preview.png")
    # the registered PET, for measuring: float32 on the MRI grid, and the hotspot readout of the native PET
    assert report["outputs"]["pet"] == str(out / "good" / "pet_on_mri.nii.gz")
    pet_on_mri = sitk.ReadImage(str(out / "good" / "pet_on_mri.nii.gz"))
    assert pet_on_mri.GetPixelID() == sitk.sitkFloat32 and pet_on_mri.GetSize() == reference.GetSize()
    np.testing.assert_allclose(pet_on_mri.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    native = sitk.GetArrayFromImage(sitk.ReadImage(str(pet)))
    assert 0 < sitk.GetArrayFromImage(pet_on_mri).max() <= native.max() + 1e-3  # linear resampling: no new maxima
    assert report["hotspots"]["units"] == "image units" and report["hotspots"]["max"]["value"] <= native.max()
    with Image.open(out / "good" / "preview.png") as preview:
        assert preview.mode == "RGB" and min(preview.size) > 100
    assert tree(studies) == before  # inputs untouched


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tmp_path: Path, heads: tuple[Path, Path]) -> None:
    mri, pet = heads
    studies = tmp_path / "studies"
    for name in ("one", "two"):
        copy_case(studies, name, mri, pet)
    (tmp_path / "serial").mkdir()
    (tmp_path / "parallel").mkdir()
    serial = run_batch(studies, tmp_path / "serial", FuseOptions(method="laplacian"))
    parallel = run_batch(studies, tmp_path / "parallel", FuseOptions(method="laplacian"), workers=2)
    assert [c.status for c in serial.cases] == [c.status for c in parallel.cases] == ["ok", "ok"]
    for name in ("one", "two"):
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "serial" / name / "fused.nii.gz")))
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "parallel" / name / "fused.nii.gz")))
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_sigterm_stops_a_parallel_batch_cleanly(tmp_path: Path, heads: tuple[Path, Path]) -> None:
    """SIGTERM to the command (as a cluster's time limit sends): exit 130, every case whole or absent."""
    mri, pet = heads
    studies, out = tmp_path / "studies", tmp_path / "out"
    names = [f"case{index}" for index in range(8)]
    for name in names:
        copy_case(studies, name, mri, pet)
    out.mkdir()
    command = [sys.executable, "-m", "medfuse", "batch", str(studies), "-o", str(out), "--method", "laplacian"]
    process = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and not any(p.is_dir() for p in out.iterdir()):
        time.sleep(0.05)  # until the first case starts writing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted; no partial output was left behind" in stderr and "Traceback" not in stderr
    assert not [p for p in out.rglob("*") if ".medfuse-tmp-" in p.name]
    rows = {row["case"]: row for row in read_summary(out / "summary.csv")}
    assert sorted(rows) == names
    for name in names:
        folder = out / name
        if rows[name]["status"] == "ok":
            assert sorted(p.name for p in folder.iterdir()) == CASE_FILES
        else:
            assert rows[name]["status"] == "skipped" and not folder.exists(), (name, rows[name])
    assert any(row["status"] == "skipped" for row in rows.values())  # it did stop early


def test_clinical_style_dicom_cases(tmp_path: Path) -> None:
    """Mixed-series DICOM folders: the good one fused on the MRI grid, the bad ones failed and named."""
    from dicom_factory import make_localizer, make_series, pet_suv_tags, write_corrupt_file
    from dicom_factory import phantom as dicom_phantom

    studies, out = tmp_path / "studies", tmp_path / "out"
    shape = (8, 20, 24)
    grid = {"spacing": (2.0, 2.0, 3.0), "origin": (-24.0, -20.0, -12.0)}
    # a PACS export: T1 + localizer + PET with per-slice slopes, all in one folder, names meaningless
    t1 = make_series(studies / "good", dicom_phantom(shape), modality="MR", prefix="A", **grid)
    make_localizer(studies / "good")
    pet_series = dicom_phantom(shape, kind="pet")
    make_series(studies / "good", pet_series, modality="PT", rescale="slice", extra=pet_suv_tags(), prefix="B", **grid)
    # the PET of another patient
    make_series(studies / "mixup" / "mr", dicom_phantom(shape), modality="MR", patient_id="PAT-A", **grid)
    pet_b = {"patient_id": "PAT-B", "rescale": "slice", "extra": pet_suv_tags()}
    make_series(studies / "mixup" / "pt", pet_series, modality="PT", **pet_b, **grid)
    # a corrupt file among the slices
    make_series(studies / "corrupt", dicom_phantom(shape), modality="MR", prefix="A", **grid)
    make_series(studies / "corrupt", pet_series, modality="PT", rescale="slice", prefix="B", **grid)
    write_corrupt_file(studies / "corrupt" / "IM9999.dcm")
    out.mkdir()
    result = run_batch(studies, out, FuseOptions(method="laplacian", register="none", suv=True))
    status = {c.case: (c.status, c.error) for c in result.cases}
    assert status["good"] == ("ok", ""), status["good"]
    assert status["mixup"][0] == "failed" and "PAT-A" in status["mixup"][1] and "PAT-B" in status["mixup"][1]
    assert status["corrupt"][0] == "failed" and "IM9999.dcm" in status["corrupt"][1]
    assert sorted(p.name for p in out.iterdir()) == ["good", "index.html", "summary.csv"]
    fused, expected = sitk.ReadImage(str(out / "good" / "fused.nii.gz")), t1.image()
    assert fused.GetSize() == expected.GetSize()
    np.testing.assert_allclose(fused.GetOrigin(), expected.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(fused.GetSpacing(), expected.GetSpacing(), atol=1e-6)
    report = json.loads((out / "good" / "report.json").read_text())
    assert "SUV" in json.dumps(report["inputs"]["pet"])


def test_workers_start_with_ctrl_c_ignored_until_their_handler_is_installed() -> None:
    """A Ctrl-C while workers import their libraries must not print their tracebacks (seen under load)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from medfuse.batch import workers

    before = signal.getsignal(signal.SIGINT)
    with workers._ctrl_c_ignored_by_new_workers():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        started_ignoring = pool.submit(signal.getsignal, signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    assert started_ignoring.result(timeout=60) is signal.SIG_IGN
    pool.shutdown()
