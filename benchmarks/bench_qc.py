"""Cost and size of the QC report (issue 13: at most 1 s per case, a 256³ case's page under 15 MB).

    python benchmarks/bench_qc.py                     # the example, a 256³ MRI, a batch of three cases
    python benchmarks/bench_qc.py --repeats 5         # median of 5 runs of each case
    python benchmarks/bench_qc.py --screenshots docs  # also write docs/qc_case.png and docs/qc_index.png

Prints, with the machine (its load average says how busy it was):

* **the example** (131×155×126 MRI), fused with ``--qc``: the QC stage's time (``timings_s["qc"]``:
  resampling onto the QC grid, the pictures, encoding the viewer's volumes) against the whole case,
  and the page's size. ``--preview`` is on, as in ``medfuse batch``, so the page reuses its mosaic;
  the time of a case page without it (``fuse --qc`` alone draws the mosaic too) is printed as well.
* **a 256³ MRI** (the example MRI resampled to 1 mm, with MRI-like noise added so that it compresses
  like a real scan), fused with ``--method laplacian`` (the network's time does not matter here):
  the same figures, and the viewer's grid.
* **a batch of three cases** (the example; the example PET moved 15 mm so that registration has to
  move it back; a case without PET, which fails): ``medfuse batch`` with its default ``--qc``, the
  pages' and the index's sizes and the QC time of each case.

Each case runs in this process after one warm-up run (imports, fonts, model); the figure is the
median over ``--repeats``. Timings on a machine shared with other jobs are inflated: compare the QC
stage with the case it belongs to, measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batch import machine  # noqa: E402
from bench_pipeline import make_256  # noqa: E402

PAGE_LIMIT_MB = 15.0
QC_LIMIT_S = 1.0


def noisy_256(folder: Path) -> Path:
    """The example MRI on a 256³ grid of 1 mm voxels with Rician-like noise (2 % of white matter)."""
    import SimpleITK as sitk

    path = make_256(folder)
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(image)
    rng = np.random.default_rng(0)
    scale = 0.02 * float(np.percentile(values[values > 0], 99))
    noisy = np.hypot(values + rng.normal(0, scale, values.shape), rng.normal(0, scale, values.shape))
    out = sitk.GetImageFromArray(np.round(noisy).astype(np.int16))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return path


def fuse_case(mri: Path, pet: Path, folder: Path, method: str, preview: bool) -> dict[str, Any]:
    """Fuse one case with ``--qc`` (and ``--preview``); its timings and the page's size."""
    from medfuse.options import FuseOptions
    from medfuse.pipeline import fuse_files

    if folder.exists():
        shutil.rmtree(folder)
    options = FuseOptions(
        method=method,  # type: ignore[arg-type]
        qc=folder / "qc.html",
        preview=folder / "preview.png" if preview else None,
        report=folder / "report.json",
    )
    result = fuse_files(mri, pet, folder / "fused.nii.gz", options)
    return {"timings": result.report["timings_s"], "page_bytes": (folder / "qc.html").stat().st_size}


def measure(mri: Path, pet: Path, work: Path, method: str, repeats: int, name: str) -> dict[str, Any]:
    """Median QC time, case time and page size over ``repeats`` runs (after a warm-up)."""
    fuse_case(mri, pet, work / f"{name}-warm-up", method, preview=True)
    runs = [fuse_case(mri, pet, work / f"{name}-{i}", method, preview=True) for i in range(repeats)]
    alone = [fuse_case(mri, pet, work / f"{name}-alone-{i}", method, preview=False) for i in range(repeats)]
    qc = statistics.median(run["timings"]["qc"] for run in runs)
    total = statistics.median(run["timings"]["total"] for run in runs)
    qc_alone = statistics.median(run["timings"]["qc"] for run in alone)
    page_mb = runs[0]["page_bytes"] / 1e6
    print(
        f"{name}: QC {qc:.2f} s of a {total:.2f} s case ({100 * qc / total:.0f} %); without --preview the QC "
        f"draws the mosaic too: {qc_alone:.2f} s; page {page_mb:.1f} MB"
    )
    return {"qc_s": qc, "case_s": total, "qc_without_preview_s": qc_alone, "page_mb": page_mb}


def batch(work: Path) -> dict[str, Any]:
    """Three cases through ``medfuse batch`` with its default QC: one moved, one failing."""
    import SimpleITK as sitk

    from medfuse.batch import run_batch
    from medfuse.options import FuseOptions

    studies = work / "studies"
    for name in ("case01", "case02", "case03"):
        (studies / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / "mri.nii.gz", studies / name / "mri.nii.gz")
    shutil.copy(EXAMPLES / "pet.nii.gz", studies / "case01" / "pet.nii.gz")
    moved = sitk.ReadImage(str(EXAMPLES / "pet.nii.gz"))
    moved.SetOrigin(tuple(o + d for o, d in zip(moved.GetOrigin(), (15.0, -10.0, 5.0), strict=True)))
    sitk.WriteImage(moved, str(studies / "case02" / "pet.nii.gz"))
    output = work / "batch-out"
    result = run_batch(studies, output, FuseOptions())
    sizes = {case.case: (output / case.case / "qc.html") for case in result.cases}
    for case in result.cases:
        page = sizes[case.case]
        qc = ""
        if case.status == "ok":
            import json

            report = json.loads((output / case.case / "report.json").read_text())
            qc = f", QC {report['timings_s']['qc']:.2f} s, page {page.stat().st_size / 1e6:.1f} MB"
        print(f"  {case.case}: {case.status} in {case.seconds:.1f} s{qc}{'; ' + case.error if case.error else ''}")
    index = output / "index.html"
    print(f"batch of three: index {index.stat().st_size / 1e6:.2f} MB at {index}")
    return {"output": output, "index": index}


def screenshots(case_page: Path, index: Path, folder: Path) -> None:
    """The README's screenshots: a case page (its registration check above its viewer) and a batch index."""
    import io

    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=args, viewport={"width": 1280, "height": 900}
        )
        page = browser.new_page()
        page.goto(case_page.as_uri())
        page.wait_for_function("() => document.getElementById('viewer').dataset.state === 'ready'")
        parts = [page.locator(selector).screenshot() for selector in ("#summary", "#registration .figures", "#viewer")]
        pictures = [np.asarray(Image.open(io.BytesIO(part)).convert("RGB")) for part in parts]
        width = max(picture.shape[1] for picture in pictures)
        stacked = np.full((sum(p.shape[0] + 12 for p in pictures), width, 3), 255, np.uint8)
        top = 0
        for picture in pictures:
            stacked[top : top + picture.shape[0], : picture.shape[1]] = picture
            top += picture.shape[0] + 12
        Image.fromarray(stacked).save(folder / "qc_case.png", optimize=True)
        page.goto(index.as_uri())
        page.screenshot(path=str(folder / "qc_index.png"), full_page=True)
        browser.close()
    print(f"screenshots: {folder / 'qc_case.png'}, {folder / 'qc_index.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--screenshots", type=Path, help="write qc_case.png and qc_index.png to this folder")
    args = parser.parse_args()
    import warnings

    from medfuse.console import MedfuseWarning, set_quiet

    set_quiet(True)
    warnings.simplefilter("ignore", MedfuseWarning)  # "the output folder was created", once per run
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        example = measure(EXAMPLES / "mri.nii.gz", EXAMPLES / "pet.nii.gz", work, "net", args.repeats, "example")
        big = measure(noisy_256(work), EXAMPLES / "pet.nii.gz", work, "laplacian", args.repeats, "256³ MRI")
        batch_run = batch(work)
        if args.screenshots:
            screenshots(batch_run["output"] / "case02" / "qc.html", batch_run["index"], args.screenshots)
    worst = max(example["qc_s"], big["qc_s"])
    print(
        f"targets: QC per case {worst:.2f} s (limit {QC_LIMIT_S:g} s): {'met' if worst <= QC_LIMIT_S else 'MISSED'}; "
        f"256³ page {big['page_mb']:.1f} MB (limit {PAGE_LIMIT_MB:g} MB): "
        f"{'met' if big['page_mb'] <= PAGE_LIMIT_MB else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
