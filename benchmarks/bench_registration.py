"""Registration on clinical-like phantoms (issue 10): one figure per target, seeds fixed, machine stated.

Run from the repository root::

    python benchmarks/bench_registration.py              # everything (about 10 minutes on 2 busy cores)
    python benchmarks/bench_registration.py --quick      # one seed per case, no hard variant, no baseline
    python benchmarks/bench_registration.py --baseline REF   # compare with the registration of git REF

The phantoms are those of ``tests/phantoms.py`` (tissues, uptake and sizes documented there). Printed:

1. **Example timing**: ``register()`` on ``examples/`` now and in the baseline (the single-module
   registration of git ``REF``, loaded from ``git show``), interleaved in one process, median of
   ``--repeats``; lesion errors against ``examples/truth.json``.
2. **Brain pairs**: the simulated heads of ``tests/unit/test_registration.py`` (and the one 80 mm
   away): mean error over the head, now and baseline (target: < 0.5 mm, as before).
3. **Body pairs** (images without frame information, so ``--register auto`` registers): thigh,
   both thighs, pelvis and a tight thigh crop, each with a known offset of 3–6° and 6–12 mm, plain
   and "hard" (soft tissue of nearly equal uptake, noisier PET, stronger shading, a 3 mm bend):
   mean tumour error at the header pose, after registration (and baseline), confidence and whether
   a warning was given (targets: no case farther from the truth than its header pose, mean ≤ 8 mm).
4. **Same-frame DICOM pairs**: MRI and PET series sharing a FrameOfReferenceUID, read from DICOM:
   how far the default moves the tumour (target: ≤ 2 mm, by default none), and for comparison how
   far a forced ``--register rigid`` would.
5. **Thigh MRI in a whole-body PET**: a 267-slice PET (3.27 mm apart, one bed junction 3.19 mm)
   and a 40-slice thigh MRI in another frame, both read from DICOM: tumour error (target: ≤ 10 mm).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "unit")]
from bench_batch import machine  # noqa: E402  (benchmarks/ is on the path when run as a script)

#: The last commit of main before issue 10 (registration as a single module).
DEFAULT_BASELINE = "995e727"


def baseline_module(ref: str) -> types.ModuleType | None:
    """``medfuse/registration.py`` of git ``ref`` as a module (``None`` when that file is not there)."""
    done = subprocess.run(
        ["git", "show", f"{ref}:medfuse/registration.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"(no baseline: git show {ref}:medfuse/registration.py failed)")
        return None
    path = Path(tempfile.mkdtemp()) / "baseline_registration.py"
    path.write_text(done.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("baseline_registration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_registration"] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
    """Collect medfuse's warnings (and silence its console) for the duration."""
    from medfuse.console import MedfuseWarning, set_quiet

    set_quiet(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MedfuseWarning)
        texts: list[str] = []
        yield texts
        texts.extend(str(w.message) for w in caught if issubclass(w.category, MedfuseWarning))
    set_quiet(False)


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


# ---- 1. the example ---------------------------------------------------------------------------------
def example_timing(baseline: types.ModuleType | None, repeats: int) -> None:
    from medfuse import io, registration

    mri = io.read_volume(ROOT / "examples" / "mri.nii.gz")
    pet = io.read_volume(ROOT / "examples" / "pet.nii.gz", role="PET")
    lesions = json.loads((ROOT / "examples" / "truth.json").read_text())["lesions"]

    def errors(transform: Any) -> str:
        found = [np.linalg.norm(np.subtract(transform.TransformPoint(tuple(x["mri_lps_mm"])), x["pet_lps_mm"]))
                 for x in lesions]  # fmt: skip
        return ", ".join(f"{e:.2f}" for e in found)

    with quiet():
        registration.register(mri, pet)  # warm up (imports, caches)
        now, before = [], []
        for _ in range(repeats):
            if baseline is not None:
                old, seconds = timed(baseline.register, mri, pet)
                before.append(seconds)
            new, seconds = timed(registration.register, mri, pet)
            now.append(seconds)
    print("\n1. Example (examples/mri.nii.gz + pet.nii.gz): registration seconds, median of", repeats)
    print(f"   now      {statistics.median(now):6.2f} s   lesion errors {errors(new.transform)} mm")
    if before:
        ratio = statistics.median(now) / statistics.median(before)
        print(f"   baseline {statistics.median(before):6.2f} s   lesion errors {errors(old.transform)} mm")
        print(f"   ratio now/baseline {ratio:.2f} (target <= 1.5)")


# ---- 2. brains --------------------------------------------------------------------------------------
def brains(baseline: types.ModuleType | None) -> None:
    import test_registration as cases
    from synthetic import Grid, head_points, mean_tre, phantom_mri, phantom_pet, rigid

    from medfuse import registration

    mri = phantom_mri(cases.MRI_GRID)
    points = head_points(cases.MRI_GRID, step=3)
    pairs = [(name, grid, rigid(angles, shift)) for name, (grid, angles, shift) in sorted(cases.CASES.items())]
    far = Grid((64, 64, 56), (3.0, 3.0, 3.3), centre=(80.0, -60.0, 40.0))
    pairs.append(("80 mm away", far, rigid((3.0, -5.0, 4.0), (80.0, -60.0, 40.0))))
    print("\n2. Simulated brains (tests/unit/test_registration.py): mean error over the head, mm (target < 0.5)")
    now_all, before_all = [], []
    for name, grid, truth in pairs:
        pet = phantom_pet(grid, truth, seed=3 if name != "80 mm away" else 2)
        with quiet():
            now = mean_tre(truth, registration.register(mri, pet).transform, points)
            before = mean_tre(truth, baseline.register(mri, pet).transform, points) if baseline else float("nan")
        now_all.append(now)
        before_all.append(before)
        print(f"   {name:18s} now {now:5.2f}   baseline {before:5.2f}")
    print(f"   mean               now {np.mean(now_all):5.2f}   baseline {np.mean(before_all):5.2f}")


# ---- 3. body pairs ----------------------------------------------------------------------------------
def bodies(baseline: types.ModuleType | None, seeds: list[int], hard: bool) -> None:
    import phantoms

    from medfuse import registration

    print("\n3. Body pairs, known offset 3-6 deg and 6-12 mm: mean tumour error, mm")
    print(f"   {'case':34s} {'header':>6s} {'now':>6s} {'base':>6s}  confidence (spread mm)  warned  kept from header")
    rows = []
    for variant in [False, True] if hard else [False]:
        for region in phantoms.REGIONS:
            for seed in seeds:
                pair = phantoms.body_pair(region, seed, hard=variant)
                with quiet() as warned:
                    result, seconds = timed(registration.register, pair.mri, pair.pet)
                    before = baseline.register(pair.mri, pair.pet).transform if baseline else None
                header, now = pair.header_error(), pair.tumour_error(result.transform)
                old = pair.tumour_error(before) if before is not None else float("nan")
                rows.append((header, now, old, bool(warned)))
                spread = result.confidence.spread_mm
                print(f"   {pair.name:34s} {header:6.1f} {now:6.1f} {old:6.1f}  {result.confidence.level:6s} "
                      f"({'-' if spread is None else f'{spread:.1f}'})  {'yes' if warned else 'no':3s}  "
                      f"{', '.join(result.anchored) or '-'}  [{seconds:.1f} s]")  # fmt: skip
    header, now, old, warned = (np.array(column) for column in zip(*rows, strict=True))
    print(f"   mean: header {header.mean():.1f}, now {now.mean():.1f}, baseline {np.nanmean(old):.1f} mm (target <= 8)")
    print(f"   worse than the header pose: now {int(np.sum(now > header))} of {len(now)} (target 0), "
          f"baseline {int(np.sum(old > header))}; now worst {now.max():.1f} mm")  # fmt: skip
    print(f"   uncertain results warned about: {int(warned.sum())} of {len(now)}")


# ---- 4. same-frame DICOM ----------------------------------------------------------------------------
def _write_pair(folder: Path, pair: Any, *, same_frame: bool, depths: Any = None) -> tuple[Path, Path]:
    """The pair as two DICOM series (MR int16, PT with per-slice slopes); one frame of reference or two."""
    import dicom_factory as factory
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    frame = generate_uid()
    mri = sitk.Cast(sitk.Clamp(pair.mri, lowerBound=0.0, upperBound=32000.0), sitk.sitkInt16)
    factory.make_series(folder / "mr", mri, description="T1 SE", rescale="none", signed=True,
                        frame_of_reference_uid=frame)  # fmt: skip
    factory.make_series(folder / "pt", pair.pet, modality="PT", description="PET AC", rescale="slice",
                        frame_of_reference_uid=frame if same_frame else generate_uid(), depths=depths)  # fmt: skip
    return folder / "mr", folder / "pt"


def _load(mri_folder: Path, pet_folder: Path) -> tuple[Any, Any, tuple[str | None, str | None]]:
    from medfuse import io

    mri = io.load_volume(mri_folder, role="MRI")
    pet = io.load_volume(pet_folder, role="PET")
    frames = (mri.info["dicom"]["frame_of_reference_uid"], pet.info["dicom"]["frame_of_reference_uid"])
    return mri, pet, frames


def same_frame(seeds: list[int]) -> None:
    import phantoms

    from medfuse.options import RegisterMode
    from medfuse.registration import place_pet

    print("\n4. Same-frame DICOM pairs (MRI resampled into the PET's frame): tumour moved, mm (target <= 2)")
    for region in ("thigh", "thighs", "pelvis"):
        for seed in seeds:
            aligned = phantoms.body_pair(region, seed, aligned=True)
            with tempfile.TemporaryDirectory() as folder, quiet():
                mri, pet, frames = _load(*_write_pair(Path(folder), aligned, same_frame=True))
                default = place_pet(mri.image, pet.image, RegisterMode.AUTO, frames=frames)
                forced = place_pet(mri.image, pet.image, RegisterMode.RIGID, frames=frames)
            level = forced.record["confidence"]["level"]
            print(f"   {aligned.name:24s} default: {default.record['source']}, moved "
                  f"{aligned.tumour_error(default.transform):.1f}; forced rigid moves it "
                  f"{aligned.tumour_error(forced.transform):.1f} (confidence {level})")  # fmt: skip


# ---- 5. thigh in a whole-body PET -------------------------------------------------------------------
def whole_body(baseline: types.ModuleType | None, seeds: list[int]) -> None:
    import phantoms

    from medfuse.options import RegisterMode
    from medfuse.registration import place_pet

    depths = phantoms.multibed_positions()
    print("\n5. Thigh MRI (40 x 5.2 mm) in a whole-body PET (267 slices, a 3.19 mm bed junction), different "
          "frames, from DICOM: tumour error, mm (target <= 10)")  # fmt: skip
    for seed in seeds:
        pair = phantoms.wholebody_pair(seed)
        with tempfile.TemporaryDirectory() as folder, quiet() as warned:
            mri, pet, frames = _load(*_write_pair(Path(folder), pair, same_frame=False, depths=depths))
            placed, seconds = timed(place_pet, mri.image, pet.image, RegisterMode.AUTO, None, frames)
            before = baseline.register(mri.image, pet.image).transform if baseline else None
        resampled = pet.info["dicom"]["resampled_slices"]
        old = pair.tumour_error(before) if before is not None else float("nan")
        confidence = placed.record["confidence"]
        print(f"   seed {seed}: PET read as {resampled['slices']} slices {resampled['spacing_mm']:.4f} mm apart "
              f"({'warned' if any('resampled onto' in w for w in warned) else 'NOT warned'}); header "
              f"{pair.header_error():.0f}, now {pair.tumour_error(placed.transform):.1f}, baseline {old:.1f}; "
              f"confidence {confidence['level']}: {confidence['reason']} [{seconds:.1f} s]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed per case, no hard variant, no baseline")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the registration to compare with")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats on the example")
    parser.add_argument("--only", nargs="*", choices=("example", "brains", "bodies", "same-frame", "whole-body"))
    args = parser.parse_args()
    print("machine:", machine())
    baseline = baseline_module(args.baseline)
    sections = set(args.only or ("example", "brains", "bodies", "same-frame", "whole-body"))
    seeds = [1] if args.quick else [1, 2, 3]
    compare = None if args.quick else baseline
    if "example" in sections:
        example_timing(baseline, args.repeats)
    if "brains" in sections:
        brains(baseline)
    if "bodies" in sections:
        bodies(compare, seeds, hard=not args.quick)
    if "same-frame" in sections:
        same_frame(seeds[:1] if args.quick else [1, 2])
    if "whole-body" in sections:
        whole_body(compare, seeds)


if __name__ == "__main__":
    main()
