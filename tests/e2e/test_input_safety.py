"""Inputs are read-only to medfuse, weights are verified before use, nothing touches the network, paths
are reported as the user gave them and no temporary file outlives a run.

Every command is run on inputs whose files (names and SHA-256 of the contents) are recorded before
and compared after: ``fuse`` on NIfTI files and on a DICOM folder (with every optional output, and
with a DICOM export), 2-D ``fuse`` on files and on folders, ``preview``, ``info`` and ``evaluate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import make_series
from PIL import Image
from synthetic import Grid, phantom_mri, phantom_pet, rigid
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.errors import EXIT_UNREADABLE, EXIT_WEIGHTS

runner = CliRunner()


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path (names, contents and the set of files)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of inputs: NIfTI/MetaImage volumes, DICOM MRI and PET series, and 2-D images."""
    folder = tmp_path_factory.mktemp("studies")
    mri = phantom_mri(Grid((32, 36, 32), (6.0, 6.0, 6.0)), dtype=np.int16)
    pet = phantom_pet(Grid((24, 28, 24), (8.0, 8.0, 8.0)), rigid((2.0, 0.0, 3.0), (4.0, -3.0, 2.0)))
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    sitk.WriteImage(pet, str(folder / "pet.mha"))
    make_series(folder / "dicom" / "mri", mri, modality="MR", rescale="none", signed=True)
    make_series(folder / "dicom" / "pet", pet, modality="PT", rescale="slice")
    rng = np.random.default_rng(7)
    for name in ("mri_slices", "pet_slices", "fused_slices"):
        (folder / name).mkdir()
        for index in range(2):
            pixels = (rng.random((24, 24)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"slice{index}.png")
    return folder


def run(*args: str | Path) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


COMMANDS = {
    "fuse NIfTI + MetaImage, every output": lambda s, out: [
        "fuse", s / "mri.nii.gz", s / "pet.mha", "-o", out / "fused.nii.gz", "--preview", out / "p.png",
        "--report", out / "r.json", "--save-transform", out / "t.tfm", "--method", "laplacian",
    ],
    "fuse DICOM folders, DICOM export": lambda s, out: [
        "fuse", s / "dicom", s / "dicom", "-o", out, "--format", "dicom", "--method", "laplacian",
    ],
    "fuse with the network": lambda s, out: [
        "fuse", s / "mri.nii.gz", s / "pet.mha", "-o", out / "fused.nii", "--threads", "1",
    ],
    "fuse 2-D files": lambda s, out: [
        "fuse", s / "mri_slices" / "slice0.png", s / "pet_slices" / "slice0.png", "-o", out / "f.png",
        "--method", "laplacian",
    ],
    "fuse 2-D folders": lambda s, out: ["fuse", s / "mri_slices", s / "pet_slices", "-o", out, "--method", "laplacian"],
    "preview with a PET": lambda s, out: [
        "preview", s / "dicom" / "mri", "--pet", s / "pet.mha", "-o", out / "p.png", "--mode", "triplanar",
    ],
    "info on a file": lambda s, out: ["info", s / "pet.mha", "--json"],
    "info on a DICOM folder": lambda s, out: ["info", s / "dicom" / "pet"],
    "evaluate": lambda s, out: [
        "evaluate", "--fused", s / "fused_slices", "--mri", s / "mri_slices", "--pet", s / "pet_slices",
        "--json", out / "metrics.json",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_inputs_are_byte_identical_after_every_command(name: str, studies: Path, tmp_path: Path) -> None:
    before = tree_digest(studies)
    run(*COMMANDS[name](studies, tmp_path / "out"))
    assert tree_digest(studies) == before


# ---- weights: verified by SHA-256 before use, never unpickled ------------------------------------------
@pytest.mark.parametrize("form", ["graph", "weights"])
def test_bundled_weights_are_verified_before_they_are_loaded(
    form: str, studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX graph the CPU runs and the safetensors file (CUDA, other backends, no graph) are both
    checked against their pinned SHA-256 before anything is made of their bytes."""
    import onnxruntime
    import safetensors.torch

    from medfuse import inference

    loads: list[int] = []
    monkeypatch.setattr(safetensors.torch, "load", lambda data: loads.append(len(data)))
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda data, *args, **kwargs: loads.append(len(data)))
    other = hashlib.sha256(b"other weights").hexdigest()
    bundled = inference.BUNDLED["uptake"]
    if form == "graph":
        monkeypatch.setitem(inference.BUNDLED, "uptake", dataclasses.replace(bundled, graph_sha256=other))
    else:
        monkeypatch.setattr(inference, "load_bundled_graph", lambda kind: None)
        monkeypatch.setitem(inference.BUNDLED, "uptake", dataclasses.replace(bundled, weights_sha256=other))
    result = runner.invoke(app, ["fuse", str(studies / "mri.nii.gz"), str(studies / "pet.mha"), "-o",
                                 str(tmp_path / "f.nii.gz")])  # fmt: skip
    assert result.exit_code == EXIT_WEIGHTS, result.output
    name = "fusionnet_v2.onnx" if form == "graph" else "fusionnet_v2.safetensors"
    assert f"{name}: SHA-256 mismatch" in result.output
    assert loads == [] and not (tmp_path / "f.nii.gz").exists()


class _Payload:
    """Unpickling this object would create ``marker``: proof that weights were loaded as code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_weights_are_never_unpickled(studies: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_was_executed"
    weights = tmp_path / "payload.pt"
    weights.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    sidecar = weights.with_name("payload.pt.sha256")
    sidecar.write_text(hashlib.sha256(weights.read_bytes()).hexdigest() + "  payload.pt\n")  # the hash is right
    pair = (studies / "mri_slices" / "slice0.png", studies / "pet_slices" / "slice0.png")
    result = runner.invoke(app, ["fuse", *map(str, pair), "-o", str(tmp_path / "f.png"), "--weights", str(weights)])
    assert result.exit_code == EXIT_WEIGHTS, result.output
    assert "payload.pt: not a readable safetensors file" in result.output
    assert not marker.exists() and not (tmp_path / "f.png").exists()


# ---- no network -----------------------------------------------------------------------------------------
#: Runs the CLI with an audit hook that refuses (and reports) every connection, name lookup or datagram,
#: imports included. Creating a socket is allowed: importing pydicom imports requests, whose urllib3 probes
#: IPv6 support by binding a socket to ::1 (local, nothing leaves the machine).
NO_NETWORK = """
import sys

NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                  "socket.getnameinfo", "socket.sendto", "socket.sendmsg", "urllib.Request"}

def refuse_network(event, args):
    if event in NETWORK_EVENTS:
        print(f"NETWORK: {event} {args!r}", file=sys.stderr, flush=True)
        raise OSError(f"network access attempted: {event}")

sys.addaudithook(refuse_network)
from medfuse.cli import main
sys.argv = ["medfuse", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    "name", ["fuse with the network", "fuse DICOM folders, DICOM export", "info on a DICOM folder"]
)
@pytest.mark.slow
def test_no_network_access(name: str, studies: Path, tmp_path: Path) -> None:
    args = [str(a) for a in COMMANDS[name](studies, tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "NETWORK" not in done.stderr


# ---- paths in reports and messages are the user's own ----------------------------------------------------
def test_reports_and_messages_show_paths_as_given(studies: Path, tmp_path: Path, monkeypatch) -> None:
    """Relative paths stay relative and a link is not replaced by its target, in the report and on screen."""
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "t1.nii.gz").symlink_to(studies / "mri.nii.gz")
    (tmp_path / "scans" / "pet_dicom").symlink_to(studies / "dicom" / "pet", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    result = run("fuse", "scans/t1.nii.gz", "scans/pet_dicom", "-o", "out/fused.nii.gz", "--report", "out/r.json",
                 "--method", "laplacian")  # fmt: skip
    report = json.loads((tmp_path / "out" / "r.json").read_text())
    assert report["inputs"]["mri"]["path"] == "scans/t1.nii.gz"
    assert report["inputs"]["pet"]["path"] == "scans/pet_dicom"
    assert report["inputs"]["pet"]["dicom"]["reason"]
    assert report["outputs"] == {"fused": "out/fused.nii.gz", "overlay": "out/fused_overlay.nii.gz",
                                 "report": "out/r.json"}  # fmt: skip
    assert "Fused scans/t1.nii.gz + scans/pet_dicom -> out/fused.nii.gz" in result.output
    assert "PET: series" in result.output and "from scans/pet_dicom:" in result.output
    missing = runner.invoke(app, ["fuse", "scans/t1.nii.gz", "scans/nope.nii.gz", "-o", "out/g.nii.gz"])
    assert missing.exit_code == EXIT_UNREADABLE
    assert "medfuse: error: scans/nope.nii.gz: the PET input does not exist" in missing.output


# ---- temporary files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "code"),
    [("fuse NIfTI + MetaImage, every output", 0), ("fuse DICOM folders, DICOM export", 0), ("refused output", 5)],
)
@pytest.mark.slow
def test_no_temporary_file_is_left_anywhere(name: str, code: int, studies: Path, tmp_path: Path) -> None:
    """A run leaves its outputs (or nothing) in the output folder and nothing in the system temp dir."""
    out, temp = tmp_path / "out", tmp_path / "tmp"
    temp.mkdir()
    if name == "refused output":
        out.mkdir()
        (out / "fused.nii.gz").write_bytes(b"keep")
        args = [*COMMANDS["fuse NIfTI + MetaImage, every output"](studies, out)]
    else:
        args = COMMANDS[name](studies, out)
    environment = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run([sys.executable, "-m", "medfuse", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=120)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert list(temp.iterdir()) == []
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or "medfuse-tmp" in p.name]
    assert leftovers == []
    if name == "refused output":
        assert [p.name for p in out.iterdir()] == ["fused.nii.gz"] and (out / "fused.nii.gz").read_bytes() == b"keep"
