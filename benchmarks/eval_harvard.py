"""Score Harvard series with the network and the Laplacian baseline, fused and scored as the CLI does.

    python benchmarks/eval_harvard.py                       # PET-MRI series 41, net + laplacian, CDDFuse row
    python benchmarks/eval_harvard.py --series 25 30 41     # several series
    python benchmarks/eval_harvard.py --modality SPECT --series 13
    python benchmarks/eval_harvard.py --weights fold.safetensors --series 41   # a cross-validation fold's weights
    python benchmarks/eval_harvard.py --methods laplacian --base-rule mean   # compare Laplacian base rules

The bundled weights were trained on every series of ../shared/data/harvard, so their scores here are
training-set figures; held-out figures come from ``medfuse train --data ../shared/data/harvard --cv``
(leave-series-out, the model card's table), or from this script given a fold's weights (``medfuse train
--holdout PET41 ... -o fold.safetensors``) and the series that fold left out.

The chosen slices are copied into a temporary folder laid out as MRI/, PET/ and <method>/, fused with
``medfuse.fusion2d.fuse_image_folders`` (what ``medfuse fuse MRI_DIR PET_DIR -o OUT`` runs) and scored with
``medfuse.metrics.evaluate_folders`` (what ``medfuse evaluate`` runs). It prints one row per method, the
CDDFuse MRI-PET row for reference (measured by its authors on their own test pairs, so only indicative)
and how many of the eight metrics reach it, plus the fusion time per slice and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from medfuse import metrics
from medfuse.atomic import output_transaction
from medfuse.console import set_quiet
from medfuse.errors import MedfuseError
from medfuse.fusion2d import fuse_image_folders
from medfuse.inference import load_fuser
from medfuse.laplacian import LaplacianFuser
from medfuse.options import FuseOptions

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "harvard"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Harvard folder (default: %(default)s)")
    parser.add_argument("--modality", choices=("PET", "SPECT"), default="PET", help="PET-MRI or SPECT-MRI pairs")
    parser.add_argument("--series", nargs="+", default=["41"], help="series numbers to score (default: 41)")
    parser.add_argument("--methods", nargs="+", choices=("net", "laplacian"), default=["net", "laplacian"])
    parser.add_argument("--weights", type=Path, default=None, help="network weights (default: the bundled ones)")
    parser.add_argument("--device", default="cpu", help="device for the network (default: cpu)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the network (default: 2)")
    parser.add_argument("--base-rule", choices=("max", "mean"), default=None, help="Laplacian base rule override")
    parser.add_argument("--no-reference", action="store_true", help="leave out the CDDFuse reference row")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON to this file")
    return parser.parse_args(argv)


def select_pairs(data: Path, modality: str, series: list[str]) -> list[str]:
    """File names of the chosen series present in both the MRI and the functional folder."""
    root = data / f"{modality}-MRI"
    if not root.is_dir():
        raise SystemExit(f"{root}: not found; pass --data pointing at the Harvard folder.")
    names = sorted(
        path.name
        for path in (root / "MRI").glob("*.png")
        if path.stem[:-3] in series and (root / modality / path.name).is_file()
    )
    if not names:
        raise SystemExit(
            f"{root}: no slices of series {', '.join(series)}; the series are the digits before the last three."
        )
    return names


def copy_pairs(data: Path, modality: str, names: list[str], workdir: Path) -> tuple[Path, Path]:
    """Copy the chosen MRI and PET/SPECT slices into workdir/MRI and workdir/PET."""
    mri_dir, pet_dir = workdir / "MRI", workdir / "PET"
    mri_dir.mkdir()
    pet_dir.mkdir()
    for name in names:
        shutil.copyfile(data / f"{modality}-MRI" / "MRI" / name, mri_dir / name)
        shutil.copyfile(data / f"{modality}-MRI" / modality / name, pet_dir / name)
    return mri_dir, pet_dir


def run_method(method: str, args: argparse.Namespace, mri_dir: Path, pet_dir: Path, workdir: Path) -> dict[str, float]:
    """Fuse every pair with one method and score it; the means plus the fusion time per slice (ms)."""
    options = FuseOptions(method=method, weights=args.weights, device=args.device, threads=args.threads)
    if method == "laplacian" and args.base_rule is not None:
        fuser = LaplacianFuser(args.base_rule)
    else:
        fuser = load_fuser(options, kind="colour")  # the atlas's PET and SPECT are pseudo-colour images
    out_dir = workdir / method
    out_dir.mkdir()
    start = time.perf_counter()
    written = fuse_image_folders(mri_dir, pet_dir, out_dir, options, fuser=fuser)
    per_slice_ms = (time.perf_counter() - start) / len(written) * 1000
    evaluation = metrics.evaluate_folders(out_dir, mri_dir, pet_dir)
    return {**evaluation.means, "ms_per_slice": per_slice_ms, "pairs": float(len(evaluation.per_image))}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    names = select_pairs(args.data, args.modality, args.series)
    set_quiet(True)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="medfuse-eval-") as temp:
        workdir = Path(temp)
        mri_dir, pet_dir = copy_pairs(args.data, args.modality, names, workdir)
        for method in args.methods:
            label = f"laplacian ({args.base_rule})" if method == "laplacian" and args.base_rule else method
            try:
                rows[label] = run_method(method, args, mri_dir, pet_dir, workdir)
            except MedfuseError as exc:
                console.print(f"[yellow]{label}: skipped[/yellow] ({exc.message})")
    table_rows = dict(rows)
    if not args.no_reference:
        table_rows["CDDFuse (paper)"] = metrics.CDDFUSE_MRI_PET
    title = f"Harvard {args.modality}-MRI series {', '.join(args.series)}: {len(names)} pairs"
    console.print(metrics.metrics_table(table_rows, title=title))
    for label, values in rows.items():
        met = [name for name in metrics.METRIC_NAMES if values[name] >= metrics.CDDFUSE_MRI_PET[name]]
        console.print(
            f"{label}: {len(met)}/8 metrics reach the CDDFuse row ({', '.join(met) or 'none'}); "
            f"fusion {values['ms_per_slice']:.1f} ms per slice including reading and writing PNGs"
        )
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    console.print(
        f"machine: {platform.node()}, {machine}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"numpy {np.__version__}; device {args.device}, {args.threads} threads"
    )
    if args.json is not None:
        payload = {"modality": args.modality, "series": args.series, "pairs": len(names), "rows": rows}
        text = json.dumps(payload, indent=2) + "\n"
        with output_transaction(overwrite=True) as transaction:
            transaction.write(args.json, lambda temp: temp.write_text(text, encoding="utf-8"))


if __name__ == "__main__":
    main()
