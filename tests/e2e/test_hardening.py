"""The bad-input matrix on the command line: every case ends cleanly, names its culprit, writes nothing.

Each refused case checks the exit code (README, "Exit codes"), that the one error sentence names the
culprit (file or option), that no traceback is shown, that the output folder is left empty (it did
not exist before and does not exist after) and that the inputs are byte-identical afterwards.
Accepted-with-a-warning cases check the warning and that the outputs are finite and on the MRI grid.
Atomicity (a writer failing mid-file, a full disk, a failing rename, a DICOM series export) and the
unexpected-error path (one sentence plus the ``--debug`` hint; ``--debug`` shows the traceback) end
the file. Ctrl-C is in ``test_interrupt.py``.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import make_series, phantom, write_corrupt_file, write_undecodable_file
from PIL import Image
from synthetic import Grid, make_image, phantom_mri, phantom_pet, rigid
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.errors import (
    EXIT_INVALID,
    EXIT_OUTPUT,
    EXIT_PROCESSING,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    EXIT_WEIGHTS,
)

runner = CliRunner()

HUGE = 30000  # voxels per axis claimed by the "too large" headers: 30000³ float32 is far beyond any memory


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path (names, contents and the set of files)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def invoke(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def error_line(output: str) -> str:
    """The one ``medfuse: error:`` line of a run (asserting there is exactly one)."""
    lines = [line for line in output.splitlines() if line.startswith("medfuse: error:")]
    assert len(lines) == 1, output
    return lines[0]


def assert_clean_failure(result: object, code: int, fragments: tuple[str, ...]) -> None:
    """Exit ``code``, one error sentence holding every fragment, no traceback."""
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    line = error_line(output)
    assert line.rstrip().endswith("."), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# ---- inputs: a tiny good pair and every kind of bad file, built once --------------------------------
def _nifti_with_pixdim(source: Path, target: Path, pixdim_x: float) -> Path:
    """A copy of a NIfTI-1 file (.nii or .nii.gz) whose first voxel size (pixdim[1]) is ``pixdim_x``."""
    compressed = source.name.endswith(".gz")
    data = bytearray(gzip.decompress(source.read_bytes()) if compressed else source.read_bytes())
    struct.pack_into("<f", data, 80, pixdim_x)
    target.write_bytes(gzip.compress(bytes(data)) if compressed else bytes(data))
    return target


def _huge_nifti(path: Path) -> Path:
    """A NIfTI-1 header claiming HUGE³ float32 voxels, followed by a few bytes of data."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, HUGE, HUGE, HUGE, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 16, 32)  # datatype float32, 32 bits per voxel
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + bytes(4 + 1024))
    return path


def _raw_nrrd(path: Path, sizes: tuple[int, int, int], spacings: str, payload: bytes) -> Path:
    header = f"NRRD0004\ntype: float\ndimension: 3\nsizes: {' '.join(map(str, sizes))}\nspacings: {spacings}\n"
    path.write_bytes((header + "encoding: raw\nendian: little\n\n").encode() + payload)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good MRI/PET pair plus one file or folder per bad-input class, all in one folder, by file name.

    ``mri`` and ``pet`` name the good pair; ``undecodable slice`` and ``truncated slice`` the damaged
    files inside their DICOM folders.
    """
    folder = tmp_path_factory.mktemp("inputs")
    mri = phantom_mri(Grid((32, 36, 32), (6.0, 6.0, 6.0)), dtype=np.int16)
    pet = phantom_pet(Grid((24, 28, 24), (8.0, 8.0, 8.0)), rigid((2.0, 0.0, 3.0), (4.0, -3.0, 2.0)))
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    sitk.WriteImage(pet, str(folder / "pet_plain.nii"))
    sitk.WriteImage(pet, str(folder / "pet_plain.mha"), useCompression=False)
    for name in ("pet_plain.nii", "pet.nii.gz", "pet_plain.mha"):
        data = (folder / name).read_bytes()
        (folder / name.replace("pet", "truncated").replace("_plain", "")).write_bytes(data[: len(data) // 2])
    (folder / "text.nii.gz").write_text("these are notes, not an image\n")
    (folder / "empty.nii").write_bytes(b"")
    zeros = np.zeros(pet.GetSize()[::-1], np.float32)
    sitk.WriteImage(make_image(zeros, pet.GetSpacing(), pet.GetOrigin()), str(folder / "zero.nii.gz"))
    constant = make_image(np.full((24, 28, 24), 5, np.int16), (6.0,) * 3, mri.GetOrigin())
    sitk.WriteImage(constant, str(folder / "constant.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([pet, pet]), str(folder / "dynamic.nii.gz"))
    sitk.WriteImage(pet[:, :, 10], str(folder / "flat.nii.gz"))
    sitk.WriteImage(pet[:, :, 10:11], str(folder / "one_slice.nii.gz"))
    sheared = sitk.Image(mri)
    sheared.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # NIfTI outputs could not keep it
    sitk.WriteImage(sheared, str(folder / "sheared.mha"))
    metres = sitk.Image(mri)
    metres.SetSpacing((6000.0, 6000.0, 6.0))  # voxel sizes in micrometres read as millimetres
    sitk.WriteImage(metres, str(folder / "metres.nii.gz"))
    far = sitk.Image(pet)
    far.SetOrigin(tuple(o + 600.0 for o in pet.GetOrigin()))
    sitk.WriteImage(far, str(folder / "far.nii.gz"))
    _nifti_with_pixdim(folder / "pet.nii.gz", folder / "zero_spacing.nii.gz", 0.0)
    _nifti_with_pixdim(folder / "pet_plain.nii", folder / "negative_spacing.nii", -8.0)
    mha = (folder / "pet_plain.mha").read_bytes()
    assert b"ElementSpacing = 8 8 8" in mha
    (folder / "zero_spacing.mha").write_bytes(mha.replace(b"ElementSpacing = 8 8 8", b"ElementSpacing = 0 8 8"))
    payload = np.ones(24 * 28 * 24, "<f4").tobytes()
    _raw_nrrd(folder / "negative_spacing.nrrd", (24, 28, 24), "-8 8 8", payload)
    _raw_nrrd(folder / "zero_spacing.nrrd", (24, 28, 24), "0 8 8", payload)
    _huge_nifti(folder / "huge.nii")
    _raw_nrrd(folder / "huge.nrrd", (HUGE, HUGE, HUGE), "1 1 1", bytes(1024))
    (folder / "huge.mha").write_text(
        f"ObjectType = Image\nNDims = 3\nDimSize = {HUGE} {HUGE} {HUGE}\nElementSpacing = 1 1 1\n"
        "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    Image.fromarray((np.arange(32 * 32) % 251).reshape(32, 32).astype(np.uint8)).save(folder / "slice.png")
    for name in ("png_mri", "png_pet"):
        (folder / name).mkdir()
        (folder / name / "slice.png").write_bytes((folder / "slice.png").read_bytes())
    (folder / "no_dicom").mkdir()
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("the export failed\n")
    names = {"mri": folder / "mri.nii.gz", "pet": folder / "pet.nii.gz"}
    undecodable = make_series(folder / "dicom_undecodable", phantom((6, 10, 12), kind="pet"), modality="PT")
    names["undecodable slice"] = write_undecodable_file(undecodable.paths[2])
    truncated = make_series(folder / "dicom_truncated", phantom((6, 10, 12), kind="pet"), modality="PT")
    truncated.paths[1].write_bytes(truncated.paths[1].read_bytes()[:-50])
    names["truncated slice"] = truncated.paths[1]
    make_series(folder / "dicom_pet", phantom((6, 10, 12), kind="pet"), modality="PT")
    make_series(folder / "dicom_corrupt", phantom((6, 10, 12), kind="pet"), modality="PT")
    write_corrupt_file(folder / "dicom_corrupt" / "IM9999.dcm")
    huge = make_series(folder / "dicom_huge", phantom((8, 10, 12), kind="pet"), modality="PT")
    for path in huge.paths:  # headers claim 65535 x 65535 slices; no pixel is ever decoded
        dataset = pydicom.dcmread(path)
        dataset.Rows = dataset.Columns = 65535
        dataset.save_as(path)
    names.update({path.name: path for path in folder.iterdir()})
    return names


@dataclass(frozen=True)
class Case:
    """One refused command line: its arguments (built from the inputs and the output folder) and outcome."""

    args: Callable[[dict[str, Path], Path], list[str | Path]]
    code: int
    fragments: Callable[[dict[str, Path]], tuple[str, ...]]


def _fuse(mri: str, pet: str, *extra: str, output: str = "fused.nii.gz", method: str = "laplacian") -> Callable:
    """Arguments of ``medfuse fuse`` with inputs named by key and ``output`` inside the output folder."""

    def build(p: dict[str, Path], out: Path) -> list[str | Path]:
        args: list[str | Path] = ["fuse", p[mri], p[pet], "-o", out / output]
        return [*args, *(["--method", method] if method else []), *extra]

    return build


def _names(*keys: str, plain: tuple[str, ...] = ()) -> Callable[[dict[str, Path]], tuple[str, ...]]:
    """Message fragments: the file names of the inputs ``keys`` plus ``plain`` texts."""
    return lambda p: tuple(p[k].name for k in keys) + plain


CASES: dict[str, Case] = {
    # unreadable inputs (3)
    "missing PET": Case(
        lambda p, out: ["fuse", p["mri"], p["mri"].parent / "nope.nii.gz", "-o", out / "f.nii.gz"],
        EXIT_UNREADABLE,
        lambda p: ("nope.nii.gz", "the PET input does not exist"),
    ),
    "missing MRI": Case(
        lambda p, out: ["fuse", p["mri"].parent / "gone" / "t1.nii.gz", p["pet"], "-o", out / "f.nii.gz"],
        EXIT_UNREADABLE,
        lambda p: ("gone/t1.nii.gz", "the MRI input does not exist"),
    ),
    "text file named .nii.gz": Case(
        _fuse("mri", "text.nii.gz"), EXIT_UNREADABLE, _names("text.nii.gz", plain=("not a readable NIfTI",))
    ),
    "empty file": Case(_fuse("mri", "empty.nii"), EXIT_UNREADABLE, _names("empty.nii", plain=("not a readable",))),
    "truncated .nii": Case(
        _fuse("mri", "truncated.nii"), EXIT_UNREADABLE, _names("truncated.nii", plain=("is truncated",))
    ),
    "truncated .nii.gz": Case(
        _fuse("truncated.nii.gz", "pet"), EXIT_UNREADABLE, _names("truncated.nii.gz", plain=("truncated",))
    ),
    "truncated .mha": Case(
        _fuse("mri", "truncated.mha"), EXIT_UNREADABLE, _names("truncated.mha", plain=("truncated or corrupt",))
    ),
    "folder without DICOM (empty)": Case(
        _fuse("mri", "no_dicom"), EXIT_UNREADABLE, _names("no_dicom", plain=("holds no DICOM",))
    ),
    "folder without DICOM (text files)": Case(
        _fuse("notes", "pet"), EXIT_UNREADABLE, _names("notes", plain=("holds no DICOM",))
    ),
    "DICOM pixel data that cannot be decoded": Case(
        _fuse("mri", "dicom_undecodable"),
        EXIT_UNREADABLE,
        _names("undecodable slice", plain=("cannot be decoded", "J2K data: failed to read the header")),
    ),
    "DICOM pixel data truncated": Case(
        _fuse("mri", "dicom_truncated"), EXIT_UNREADABLE, _names("truncated slice", plain=("truncated or corrupt",))
    ),
    "DICOM file with a corrupt header": Case(
        _fuse("mri", "dicom_corrupt"), EXIT_UNREADABLE, lambda p: ("IM9999.dcm", "corrupt DICOM")
    ),
    "zero spacing in NRRD (refused by the NRRD reader)": Case(
        _fuse("mri", "zero_spacing.nrrd"), EXIT_UNREADABLE, _names("zero_spacing.nrrd", plain=("spacing (0) invalid",))
    ),
    "missing --transform": Case(
        _fuse("mri", "pet", "--transform", "nope.tfm"), EXIT_UNREADABLE, lambda p: ("nope.tfm", "does not exist")
    ),
    "unreadable --transform": Case(
        lambda p, out: [*_fuse("mri", "pet")(p, out), "--transform", p["text.nii.gz"]],
        EXIT_UNREADABLE,
        _names("text.nii.gz", plain=("not a readable ITK transform",)),
    ),
    # invalid inputs (4)
    "4-D PET without --frame": Case(
        _fuse("mri", "dynamic.nii.gz"), EXIT_INVALID, _names("dynamic.nii.gz", plain=("2 frames", "--frame"))
    ),
    "all-zero PET": Case(
        _fuse("mri", "zero.nii.gz"), EXIT_INVALID, _names("zero.nii.gz", plain=("every voxel of the PET equals 0",))
    ),
    "constant MRI": Case(
        _fuse("constant.nii.gz", "pet"),
        EXIT_INVALID,
        _names("constant.nii.gz", plain=("every voxel of the MRI equals 5",)),
    ),
    "2-D NIfTI against 3-D": Case(_fuse("mri", "flat.nii.gz"), EXIT_INVALID, _names("flat.nii.gz", plain=("2-D",))),
    "single-slice volume against 3-D": Case(
        _fuse("one_slice.nii.gz", "pet"), EXIT_INVALID, _names("one_slice.nii.gz", plain=("single slice",))
    ),
    "PET field of view away from the MRI under --register none": Case(
        _fuse("mri", "far.nii.gz", "--register", "none"), EXIT_INVALID, _names("far.nii.gz", plain=("barely overlap",))
    ),
    "sheared grid (non-orthogonal direction)": Case(
        _fuse("sheared.mha", "pet"), EXIT_INVALID, _names("sheared.mha", plain=("not perpendicular unit vectors",))
    ),
    "voxel sizes a thousand times too large": Case(
        _fuse("metres.nii.gz", "pet"),
        EXIT_INVALID,
        _names("metres.nii.gz", plain=("192000 × 216000 × 192 mm", "check the voxel spacing")),
    ),
    "zero spacing in NIfTI": Case(
        _fuse("zero_spacing.nii.gz", "pet"), EXIT_INVALID, _names("zero_spacing.nii.gz", plain=("(0.0, 8.0, 8.0)",))
    ),
    "negative spacing in NIfTI": Case(
        _fuse("mri", "negative_spacing.nii"), EXIT_INVALID, _names("negative_spacing.nii", plain=("(-8.0, 8.0, 8.0)",))
    ),
    "zero spacing in MetaImage": Case(
        _fuse("mri", "zero_spacing.mha"), EXIT_INVALID, _names("zero_spacing.mha", plain=("(0.0, 8.0, 8.0)",))
    ),
    "negative spacing in NRRD": Case(
        _fuse("mri", "negative_spacing.nrrd"),
        EXIT_INVALID,
        _names("negative_spacing.nrrd", plain=("(-8.0, 8.0, 8.0)",)),
    ),
    "NIfTI header claiming 30000³ voxels": Case(
        _fuse("mri", "huge.nii"), EXIT_INVALID, _names("huge.nii", plain=("30000×30000×30000 voxels", "memory"))
    ),
    "NRRD header claiming 30000³ voxels": Case(
        _fuse("huge.nrrd", "pet"), EXIT_INVALID, _names("huge.nrrd", plain=("30000×30000×30000 voxels", "memory"))
    ),
    "MetaImage header claiming 30000³ voxels": Case(
        _fuse("mri", "huge.mha"), EXIT_INVALID, _names("huge.mha", plain=("30000×30000×30000 voxels", "memory"))
    ),
    "DICOM headers claiming 65535² slices": Case(
        _fuse("mri", "dicom_huge"), EXIT_INVALID, _names("dicom_huge", plain=("65535×65535×8 voxels", "memory"))
    ),
    # usage (2)
    "2-D image against a volume": Case(
        _fuse("slice.png", "pet"), EXIT_USAGE, _names("slice.png", "pet", plain=("is a 2-D image",))
    ),
    "one file as both MRI and PET": Case(
        _fuse("mri", "mri"), EXIT_USAGE, _names("mri", plain=("the PET is the same file as the MRI",))
    ),
    "one 2-D image as both MRI and PET": Case(
        _fuse("slice.png", "slice.png", output="f.png"), EXIT_USAGE, lambda p: ("slice.png", "the same file")
    ),
    "unknown --device (net)": Case(
        _fuse("mri", "pet", "--device", "tpu", method="net"), EXIT_USAGE, lambda p: ("--device tpu: unknown device",)
    ),
    "unknown --device (laplacian)": Case(
        _fuse("mri", "pet", "--device", "tpu"), EXIT_USAGE, lambda p: ("--device tpu: unknown device",)
    ),
    "unknown --device that looks like an emoji code": Case(
        _fuse("mri", "pet", "--device", "cuda:x:"), EXIT_USAGE, lambda p: ("--device cuda:x:: unknown device",)
    ),
    "unknown --method": Case(_fuse("mri", "pet", method="wavelet"), EXIT_USAGE, lambda p: ("--method wavelet",)),
    "unknown --register": Case(
        _fuse("mri", "pet", "--register", "elastic"), EXIT_USAGE, lambda p: ("--register elastic",)
    ),
    "unknown --format": Case(_fuse("mri", "pet", "--format", "png"), EXIT_USAGE, lambda p: ("--format png",)),
    "unknown --colormap": Case(
        _fuse("mri", "pet", "--colormap", "rainbow"), EXIT_USAGE, lambda p: ("--colormap 'rainbow'",)
    ),
    "--frame out of range": Case(
        _fuse("mri", "dynamic.nii.gz", "--frame", "7"), EXIT_USAGE, lambda p: ("--frame 7", "dynamic.nii.gz")
    ),
    "--pet-window LOW above HIGH": Case(
        _fuse("mri", "pet", "--pet-window", "5", "1"), EXIT_USAGE, lambda p: ("--pet-window 5 1",)
    ),
    "--pet-blend of 1 or more": Case(
        _fuse("mri", "pet", "--pet-blend", "1.5"), EXIT_USAGE, lambda p: ("--pet-blend 1.5", "from 0 (off) to below 1")
    ),
    # outputs (5)
    "unknown output extension": Case(
        _fuse("mri", "pet", output="fused.xyz"), EXIT_OUTPUT, lambda p: ("fused.xyz", "unknown output extension")
    ),
    "image extension for a volume output": Case(
        _fuse("mri", "pet", output="fused.png"), EXIT_OUTPUT, lambda p: ("fused.png", "'.png'")
    ),
    "unknown --preview extension": Case(
        lambda p, out: [*_fuse("mri", "pet")(p, out), "--preview", out / "preview.gif"],
        EXIT_OUTPUT,
        lambda p: ("preview.gif", "--preview"),
    ),
    "unknown --report extension": Case(
        lambda p, out: [*_fuse("mri", "pet")(p, out), "--report", out / "report.txt"],
        EXIT_OUTPUT,
        lambda p: ("report.txt", "--report"),
    ),
    "output equal to the MRI": Case(
        lambda p, out: ["fuse", p["mri"], p["pet"], "-o", p["mri"], "--overwrite", "--method", "laplacian"],
        EXIT_OUTPUT,
        _names("mri", plain=("one of the inputs",)),
    ),
    "output equal to the PET, spelled differently": Case(
        lambda p, out: [
            "fuse",
            p["mri"],
            p["pet"],
            "-o",
            p["pet"].parent / ".." / p["pet"].parent.name / "pet.nii.gz",
            "--overwrite",
            "--method",
            "laplacian",
        ],
        EXIT_OUTPUT,
        lambda p: ("pet.nii.gz", "one of the inputs"),
    ),
    "--save-transform equal to --transform": Case(
        lambda p, out: [
            *_fuse("mri", "pet")(p, out),
            "--transform",
            out.parent / "t.tfm",
            "--save-transform",
            out.parent / "t.tfm",
            "--overwrite",
        ],
        EXIT_OUTPUT,
        lambda p: ("t.tfm", "one of the inputs"),
    ),
    "output inside an input folder of 2-D images": Case(
        lambda p, out: ["fuse", p["png_mri"], p["png_pet"], "-o", p["png_mri"] / "fused", "--method", "laplacian"],
        EXIT_OUTPUT,
        lambda p: ("png_mri/fused", "inside the input folder"),
    ),
    "volume output inside a DICOM input folder": Case(
        lambda p, out: [*_fuse("mri", "dicom_pet")(p, out)[:4], p["dicom_pet"] / "fused.nii.gz"],
        EXIT_OUTPUT,
        lambda p: ("dicom_pet/fused.nii.gz", "inside the input folder"),
    ),
    "output folder whose parent is missing": Case(
        _fuse("mri", "pet", output="a/b/fused.nii.gz"), EXIT_OUTPUT, lambda p: ("a/b/fused.nii.gz", "does not exist")
    ),
    # weights (6)
    "missing --weights": Case(
        _fuse("mri", "pet", "--weights", "nope.safetensors", method="net"),
        EXIT_WEIGHTS,
        lambda p: ("nope.safetensors", "not found"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_cleanly(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    case = CASES[name]
    out = tmp_path / "out"
    before = tree_digest(inputs["mri"].parent)
    result = invoke(*case.args(inputs, out))
    assert_clean_failure(result, case.code, case.fragments(inputs))
    assert not out.exists(), sorted(out.rglob("*"))
    assert tree_digest(inputs["mri"].parent) == before


@pytest.mark.parametrize(
    "name",
    ["missing PET", "truncated .mha", "zero spacing in MetaImage", "NIfTI header claiming 30000³ voxels",
     "unknown --device (laplacian)", "output equal to the MRI"],
)  # fmt: skip
@pytest.mark.slow
def test_installed_command_prints_one_line(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    """The console script: the exit code, one line on stderr (no library chatter), nothing on stdout."""
    script = shutil.which("medfuse", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the medfuse console script is not installed next to this Python")
    case, out = CASES[name], tmp_path / "out"
    done = subprocess.run([script, *map(str, case.args(inputs, out))], capture_output=True, text=True, timeout=60)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    result = SimpleNamespace(exit_code=done.returncode, output=done.stderr)
    assert_clean_failure(result, case.code, case.fragments(inputs))
    assert not out.exists()


@pytest.mark.parametrize("method", ["net", "laplacian"])
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_unavailable_cuda_device_is_refused(method: str, device: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() > (7 if device == "cuda:7" else 0):
        pytest.skip(f"{device} exists on this machine")
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", tmp_path / "out" / "f.nii.gz", "--method", method,
                    "--device", device)  # fmt: skip
    assert_clean_failure(result, EXIT_USAGE, (f"--device {device}", "CUDA"))
    assert not (tmp_path / "out").exists()


def test_cuda_named_for_laplacian_on_a_gpu_machine_is_warned_about(inputs: dict[str, Path], tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", tmp_path / "f.nii.gz", "--method", "laplacian",
                    "--device", "cuda")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--device cuda: the laplacian method runs on the CPU only" in result.output


# ---- existing outputs are left byte-identical ---------------------------------------------------------
@pytest.mark.parametrize("existing", ["fused.nii.gz", "fused_overlay.nii.gz", "preview.png"])
def test_existing_output_without_overwrite_is_left_byte_identical(
    existing: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_bytes(b"an earlier result, to be kept")
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nii.gz", "--preview", out / "preview.png",
                    "--method", "laplacian")  # fmt: skip
    assert_clean_failure(result, EXIT_OUTPUT, (existing, "already exists", "--overwrite"))
    assert sorted(p.name for p in out.iterdir()) == [existing]
    assert (out / existing).read_bytes() == b"an earlier result, to be kept"


def test_output_under_an_existing_file_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file, not a folder")
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", tmp_path / "results" / "fused.nii.gz")
    assert_clean_failure(result, EXIT_OUTPUT, ("results/fused.nii.gz", "is a file, not a folder"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert (tmp_path / "results").read_text() == "a file, not a folder"


# ---- weights ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Corrupt, truncated and wrong-hash copies of the bundled weights."""
    from medfuse.inference import bundled_weights_path

    folder = tmp_path_factory.mktemp("weights")
    data = bundled_weights_path().read_bytes()
    files = {
        "corrupt": folder / "corrupt.safetensors",
        "truncated": folder / "truncated.safetensors",
        "wrong hash": folder / "renamed.safetensors",
        "truncated, with the right sidecar": folder / "cut.safetensors",
    }
    files["corrupt"].write_bytes(b"\x93NUMPY" + bytes(range(256)) * 8)
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["wrong hash"].write_bytes(data)
    files["wrong hash"].with_name("renamed.safetensors.sha256").write_text("0" * 64 + "  renamed.safetensors\n")
    files["truncated, with the right sidecar"].write_bytes(data[:-1000])
    sidecar = files["truncated, with the right sidecar"].with_name("cut.safetensors.sha256")
    sidecar.write_text(hashlib.sha256(data).hexdigest() + "\n")
    return files


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", "not a readable safetensors file"),
        ("truncated", "not a readable safetensors file"),
        ("wrong hash", "SHA-256 mismatch"),
        ("truncated, with the right sidecar", "SHA-256 mismatch"),
    ],
)
@pytest.mark.parametrize("dimension", ["3-D", "2-D"])
def test_bad_weights_are_refused(
    kind: str, message: str, dimension: str, bad_weights: dict[str, Path], inputs: dict[str, Path], tmp_path: Path
) -> None:
    weights = bad_weights[kind]
    if dimension == "3-D":
        pair, output = (inputs["mri"], inputs["pet"]), tmp_path / "out" / "f.nii.gz"
    else:
        pair, output = (inputs["png_mri"] / "slice.png", inputs["png_pet"] / "slice.png"), tmp_path / "out" / "f.png"
    result = invoke("fuse", *pair, "-o", output, "--weights", weights)
    assert_clean_failure(result, EXIT_WEIGHTS, (weights.name, message))
    assert not (tmp_path / "out").exists()


# ---- accepted with a warning -------------------------------------------------------------------------
def assert_on_grid(path: Path, reference: Path) -> np.ndarray:
    """The voxels of ``path`` after checking they are finite and on ``reference``'s grid to 1e-6."""
    image, grid = sitk.ReadImage(str(path)), sitk.ReadImage(str(reference))
    assert image.GetSize() == grid.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(image, getter)(), getattr(grid, getter)(), atol=1e-6)
    values = sitk.GetArrayFromImage(image)
    assert np.isfinite(values).all()
    return values


@pytest.mark.parametrize("role", ["MRI", "PET"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_nan_and_inf_voxels_are_set_to_zero_with_a_warning(
    role: str, suffix: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    source = sitk.ReadImage(str(inputs[role.lower()]), sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(source)
    values[5, 6, 7], values[10, 10, 10], values[12, 13, 14] = np.nan, np.inf, -np.inf
    damaged = sitk.GetImageFromArray(values)
    damaged.CopyInformation(source)
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(damaged, str(path))
    pair = (path, inputs["pet"]) if role == "MRI" else (inputs["mri"], path)
    out = tmp_path / "out"
    result = invoke("fuse", *pair, "-o", out / "fused.nii.gz", "--method", "laplacian")
    assert result.exit_code == 0, result.output
    assert f"nan{suffix}: 3 NaN or infinite voxels in the {role} were set to 0." in result.output
    mri = pair[0]
    fused = assert_on_grid(out / "fused.nii.gz", mri)
    assert fused.min() >= 0 and fused.max() <= 1 and fused.max() > 0.2
    assert_on_grid(out / "fused_overlay.nii.gz", mri)


def test_missing_output_folder_with_existing_parent_is_created(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "new_folder"
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nrrd", "--method", "laplacian")
    assert result.exit_code == 0, result.output
    assert f"{out}: the output folder did not exist and was created." in result.output
    assert sorted(p.name for p in out.iterdir()) == ["fused.nrrd", "fused_overlay.nrrd"]
    assert_on_grid(out / "fused.nrrd", inputs["mri"])


def test_blank_2d_slice_is_fused_with_a_warning(inputs: dict[str, Path], tmp_path: Path) -> None:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "blank.png")
    result = invoke(
        "fuse", inputs["slice.png"], tmp_path / "blank.png", "-o", tmp_path / "f.png", "--method", "laplacian"
    )
    assert result.exit_code == 0, result.output
    assert "blank.png: the PET image is blank (all its pixels are equal); the fused image shows the MRI only." in (
        result.output
    )
    assert np.asarray(Image.open(tmp_path / "f.png")).shape == (32, 32)


def test_2d_folder_skips_a_file_that_is_no_image_with_a_warning(inputs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("mri", "pet"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(inputs["slice.png"].read_bytes())
    (tmp_path / "pet" / "b.png").write_text("not a picture")
    (tmp_path / "mri" / "b.png").write_bytes(inputs["slice.png"].read_bytes())
    result = invoke("fuse", tmp_path / "mri", tmp_path / "pet", "-o", tmp_path / "out", "--method", "laplacian")
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'pet' / 'b.png'}: is named like an image but is not a PNG, JPEG or TIFF file" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


# ---- atomic outputs -----------------------------------------------------------------------------------
def _partial_then(error: BaseException) -> Callable[[sitk.Image, Path], None]:
    """A stand-in for ``io.write_volume`` that writes the first bytes of a file, then raises ``error``."""

    def write(image: sitk.Image, path: str | Path) -> None:
        Path(path).write_bytes(b"\x5c\x01\x00\x00" + bytes(4096))
        raise error

    return write


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            EXIT_OUTPUT,
            "could not be written (No space left on device)",
        ),
        (RuntimeError("ITK ERROR: ImageFileWriter: cannot write"), EXIT_OUTPUT, "cannot write"),
        (ValueError("a bug in a writer"), EXIT_PROCESSING, "unexpected internal error (ValueError: a bug in a writer)"),
    ],
)
def test_failure_mid_write_leaves_no_partial_file(
    error: BaseException, code: int, message: str, inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    monkeypatch.setattr("medfuse.io.write_volume", _partial_then(error))
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nii.gz", "--preview", out / "p.png",
                    "--report", out / "r.json", "--method", "laplacian")  # fmt: skip
    assert_clean_failure(result, code, (message,))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_full_disk_on_the_last_output_removes_the_earlier_ones(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    """The fused volume and overlay are complete when the report hits a full disk: none of them stays."""
    original = Path.write_text

    def full_disk(self: Path, *args: object, **kwargs: object) -> int:
        if self.suffix == ".json":
            original(self, "{", encoding="utf-8")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full_disk)
    out = tmp_path / "out"
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nii.gz", "--report", out / "r.json",
                    "--method", "laplacian")  # fmt: skip
    assert_clean_failure(result, EXIT_OUTPUT, ("r.json", "No space left on device"))
    assert not out.exists()


def test_failed_rename_takes_back_the_outputs_already_renamed(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    import os

    original, calls = os.replace, []

    def second_rename_fails(source: object, target: object) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        original(source, target)

    monkeypatch.setattr("medfuse.atomic.os.replace", second_rename_fails)
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nii.gz", "--method", "laplacian")
    assert_clean_failure(
        result, EXIT_OUTPUT, ("fused_overlay.nii.gz: could not be moved into place (Input/output error)",)
    )
    assert len(calls) == 2 and list(out.iterdir()) == []


def test_output_written_by_another_program_meanwhile_is_not_replaced(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    from medfuse import io

    out, original = tmp_path / "out", io.write_volume

    def meanwhile(image: sitk.Image, path: str | Path) -> None:
        (out / "fused.nii.gz").write_bytes(b"written by another program")
        original(image, path)

    out.mkdir()
    monkeypatch.setattr("medfuse.io.write_volume", meanwhile)
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out / "fused.nii.gz", "--method", "laplacian")
    assert_clean_failure(result, EXIT_OUTPUT, ("fused.nii.gz: appeared while medfuse was running",))
    assert sorted(p.name for p in out.iterdir()) == ["fused.nii.gz"]
    assert (out / "fused.nii.gz").read_bytes() == b"written by another program"


def test_dicom_series_output_appears_whole_or_not_at_all(inputs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    from pydicom.dataset import Dataset

    original, saved = Dataset.save_as, []

    def disk_fills_up(self: Dataset, filename: object, *args: object, **kwargs: object) -> None:
        if len(saved) == 1:  # the overlay, after the fused series
            Path(str(filename)).write_bytes(b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(filename)
        original(self, filename, *args, **kwargs)

    out = tmp_path / "series"
    out.mkdir()
    monkeypatch.setattr(Dataset, "save_as", disk_fills_up)
    result = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out, "--format", "dicom", "--method", "laplacian")
    assert_clean_failure(result, EXIT_OUTPUT, ("overlay", "No space left on device"))
    assert len(saved) == 1 and list(out.iterdir()) == []

    monkeypatch.setattr(Dataset, "save_as", original)
    written = invoke("fuse", inputs["mri"], inputs["pet"], "-o", out, "--format", "dicom", "--method", "laplacian")
    assert written.exit_code == 0, written.output
    slices = sitk.ReadImage(str(inputs["mri"])).GetSize()[2]
    assert sorted(p.name for p in out.iterdir()) == ["fused", "overlay"]
    frames = [
        int(pydicom.dcmread(path).NumberOfFrames) for name in ("fused", "overlay") for path in (out / name).iterdir()
    ]
    assert frames == [slices, slices]  # one multi-frame file per series


# ---- unexpected errors --------------------------------------------------------------------------------
def test_unexpected_error_ends_in_one_sentence_with_the_debug_hint(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero\nsecond line of detail")

    monkeypatch.setattr("medfuse.registration.placement.register", broken)
    args = ("fuse", inputs["mri"], inputs["pet"], "-o", tmp_path / "out" / "f.nii.gz", "--method", "laplacian")
    result = invoke(*args)
    assert_clean_failure(
        result, EXIT_PROCESSING, ("unexpected internal error (ZeroDivisionError: float division by zero)", "--debug")
    )
    assert "second line" not in result.output and not (tmp_path / "out").exists()

    debug = invoke("--debug", *args)
    assert debug.exit_code == EXIT_PROCESSING
    assert "Traceback (most recent call last)" in debug.output and "in broken" in debug.output
    assert error_line(debug.output).endswith("rerun with --debug for details.")


def test_debug_shows_the_traceback_of_an_expected_error(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(
        "--debug", "fuse", inputs["mri"], inputs["zero.nii.gz"], "-o", tmp_path / "f.nii.gz", "--method", "laplacian"
    )
    assert result.exit_code == EXIT_INVALID
    assert "Traceback (most recent call last)" in result.output and "InvalidInputError" in result.output
    assert "every voxel of the PET equals 0" in error_line(result.output)


def test_messages_print_paths_verbatim(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Brackets, backslashes and colons in a path are shown as they are (no markup, no emoji)."""
    folder = tmp_path / "scan [x]:x: \\[bold]"
    folder.mkdir()
    (folder / "pet.nii.gz").write_text("not an image")
    result = invoke("fuse", inputs["mri"], folder / "pet.nii.gz", "-o", tmp_path / "f.nii.gz", "--method", "laplacian")
    assert_clean_failure(result, EXIT_UNREADABLE, (f"{folder / 'pet.nii.gz'}: the PET file is not a readable",))


# ---- other commands -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (("info", "text.nii.gz"), EXIT_UNREADABLE, ("text.nii.gz", "not a readable NIfTI")),
        (("info", "truncated.nii"), EXIT_UNREADABLE, ("truncated.nii", "truncated")),
        (("info", "huge.nii"), EXIT_INVALID, ("huge.nii", "30000×30000×30000 voxels")),
        (("info", "zero_spacing.nii.gz"), EXIT_INVALID, ("zero_spacing.nii.gz", "zero, negative")),
        (("info", "dicom_undecodable"), EXIT_UNREADABLE, ("undecodable slice", "cannot be decoded")),
        (("info", "dicom_undecodable", "--series", "1.2.3"), EXIT_USAGE, ("--series 1.2.3", "dicom_undecodable")),
        (("info", "no_dicom", "--series", "1.2.3"), EXIT_UNREADABLE, ("no_dicom", "holds no DICOM images")),
        (("info", "slice.png"), EXIT_UNREADABLE, ("slice.png", "unsupported format")),
        (("preview", "text.nii.gz", "-o", "OUT/p.png"), EXIT_UNREADABLE, ("text.nii.gz", "not a readable NIfTI image")),
        (("preview", "pet", "-o", "OUT/p.jpg"), EXIT_OUTPUT, ("p.jpg", "unknown output extension")),
        (("preview", "pet", "-o", "pet"), EXIT_OUTPUT, ("pet.nii.gz",)),
        (("preview", "mri", "--pet", "truncated.mha", "-o", "OUT/p.png"), EXIT_UNREADABLE, ("truncated.mha",)),
        (("evaluate", "--fused", "nope", "--mri", "png_mri", "--pet", "png_pet"), EXIT_UNREADABLE, ("nope",)),
        (("evaluate", "--fused", "no_dicom", "--mri", "png_mri", "--pet", "png_pet"), EXIT_INVALID, ("no_dicom",)),
        (
            ("evaluate", "--fused", "png_mri", "--mri", "png_mri", "--pet", "png_pet", "--json", "png_pet/m.json"),
            EXIT_OUTPUT,
            ("png_pet/m.json", "inside the input folder"),
        ),
    ],
)
def test_other_commands_refuse_bad_inputs(
    args: tuple[str, ...], code: int, fragments: tuple[str, ...], inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def argument(text: str) -> str | Path:
        """An input by name, ``OUT/...`` in the output folder, ``NAME/...`` inside an input folder, else as is."""
        head, _, tail = text.partition("/")
        if text in inputs:
            return inputs[text]
        if head == "OUT":
            return out / tail
        return inputs[head] / tail if tail and head in inputs else text

    argv = [argument(a) for a in args]
    before = tree_digest(inputs["mri"].parent)
    result = invoke(*argv)
    assert_clean_failure(result, code, tuple(inputs[f].name if f in inputs else f for f in fragments))
    assert not out.exists() and tree_digest(inputs["mri"].parent) == before


@pytest.mark.parametrize(
    ("name", "code", "fragment"),
    [
        ("truncated.nii", EXIT_UNREADABLE, "truncated"),
        ("zero_spacing.nii.gz", EXIT_INVALID, "zero, negative"),
        ("huge.nii", EXIT_INVALID, "30000×30000×30000 voxels"),
        ("dynamic.nii.gz", EXIT_INVALID, "4-D"),
    ],
)
def test_preview_checks_files_like_fuse(
    name: str, code: int, fragment: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    result = invoke("preview", inputs["mri"].parent / name, "-o", tmp_path / "out" / "p.png")
    assert_clean_failure(result, code, (name, fragment))
    assert not (tmp_path / "out").exists()


def test_preview_of_a_pet_dicom_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("preview", inputs["dicom_pet"], "-o", tmp_path / "p.png")
    assert result.exit_code == 0, result.output


def test_batch_refuses_an_unknown_device_for_laplacian_before_any_case(inputs: dict[str, Path], tmp_path: Path) -> None:
    case = tmp_path / "studies" / "case1"
    case.mkdir(parents=True)
    for name in ("mri.nii.gz", "pet.nii.gz"):
        (case / name).write_bytes(inputs[name.split(".")[0]].read_bytes())
    result = invoke("batch", tmp_path / "studies", "-o", tmp_path / "out", "--method", "laplacian", "--device", "tpu")
    assert_clean_failure(result, EXIT_USAGE, ("--device tpu: unknown device",))
    assert not (tmp_path / "out").exists()
