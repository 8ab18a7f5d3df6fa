"""Ctrl-C (and SIGTERM) on a real ``python -m medfuse`` process: exit 130, one sentence, nothing partial.

The signal must land while the run is busy. In the first test the process is the plain command and
the signal is sent when it says it is reading the MRI (a DICOM folder, so it says so on stderr), or
once it has mapped the torch libraries. The others hold a writer in the middle of a file (a stand-in
installed by a small wrapper script, no environment variable) so the signal lands mid-write.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import make_series
from synthetic import Grid, phantom_mri, phantom_pet, rigid

from medfuse.errors import EXIT_INTERRUPTED

#: Every test here runs the real command in a subprocess and waits for it.
pytestmark = pytest.mark.slow

TIMEOUT_S = 30
INTERRUPTED = "medfuse: error: interrupted; no partial output was left behind."

#: Runs medfuse's CLI with one writer replaced by a stand-in that writes part of its file, says WRITING
#: on stdout and waits (argv[1] names the writer: volume or dicom).
HOLD_WRITER = """
import sys, time
from pathlib import Path

def hold(path, seconds=60):
    Path(path).write_bytes(b"the first bytes of a file")
    sys.stdout.write("WRITING\\n")  # one write: two writer threads may say it at once
    sys.stdout.flush()
    time.sleep(seconds)

if sys.argv[1] == "volume":
    import medfuse.io
    # volumes are written by threads side by side: a signal waits for them (a few seconds), then rolls back
    medfuse.io.write_volume = lambda image, path: hold(path, seconds=3)
else:
    from pydicom.dataset import Dataset
    written = []
    original = Dataset.save_as
    def save_as(self, filename, *args, **kwargs):
        if len(written) == 1:  # the fused series is written; hold the overlay's file
            hold(filename)
        written.append(filename)
        original(self, filename, *args, **kwargs)
    Dataset.save_as = save_as
from medfuse.cli import main
sys.argv = ["medfuse", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DICOM MRI folder and a NIfTI PET of the synthetic head."""
    folder = tmp_path_factory.mktemp("studies")
    mri = phantom_mri(Grid((40, 44, 36), (4.0, 4.0, 4.0)), dtype=np.int16)
    make_series(folder / "mri", mri, modality="MR", rescale="none", signed=True)
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    pet = phantom_pet(Grid((30, 34, 28), (6.0, 6.0, 6.0)), rigid((3.0, 0.0, -2.0), (5.0, -4.0, 3.0)))
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    return {"mri_dicom": folder / "mri", "mri": folder / "mri.nii.gz", "pet": folder / "pet.nii.gz"}


def medfuse_process(*args: str | Path, wrapper: str | None = None) -> subprocess.Popen[str]:
    """``python -m medfuse ARGS`` (or the writer-holding wrapper with ``wrapper`` as its first argument)."""
    prefix = ["-c", HOLD_WRITER, wrapper] if wrapper else ["-m", "medfuse"]
    return subprocess.Popen(
        [sys.executable, *prefix, *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()


def assert_interrupted(process: subprocess.Popen[str], out: Path, left: list[str]) -> None:
    _stdout, stderr = finish(process)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert INTERRUPTED in stderr and "Traceback" not in stderr, stderr
    remaining = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert remaining == left, stderr


def _network_runtime_is_mapped(pid: int) -> bool:
    """Whether the process has started loading the network: ONNX Runtime's library (or torch's) is mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "onnxruntime" in maps or "libtorch" in maps


@pytest.mark.parametrize("moment", ["reading the MRI", "loading the network"])
def test_ctrl_c_during_a_real_run(moment: str, studies: dict[str, Path], tmp_path: Path) -> None:
    if moment == "loading the network" and not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see the network runtime's libraries mapped")
    out = tmp_path / "out"
    process = medfuse_process("fuse", studies["mri_dicom"], studies["pet"], "-o", out / "fused.nii.gz",
                              "--preview", out / "preview.png", "--report", out / "report.json")  # fmt: skip
    assert process.stderr is not None
    if moment == "reading the MRI":
        lines = iter(process.stderr.readline, "")
        assert any(line.startswith("MRI: series") for line in lines), "the run never said it read the MRI"
    else:
        deadline = time.monotonic() + TIMEOUT_S
        while not _network_runtime_is_mapped(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    assert_interrupted(process, out, left=[])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_write_leaves_no_partial_file(signum: int, studies: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    process = medfuse_process("fuse", studies["mri"], studies["pet"], "-o", out / "fused.nii.gz",
                              "--method", "laplacian", wrapper="volume")  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "WRITING"
    partial = [p.name for p in out.iterdir() if p.name != "notes.txt"]
    # temporary names in the target folder (the fused volume and the overlay are written side by side)
    assert 1 <= len(partial) <= 2 and all(".medfuse-tmp-" in name for name in partial)
    process.send_signal(signum)
    assert_interrupted(process, out, left=["notes.txt"])


def test_ctrl_c_mid_dicom_export_leaves_no_series(studies: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "series"
    process = medfuse_process("fuse", studies["mri"], studies["pet"], "-o", out, "--format", "dicom",
                              "--method", "laplacian", wrapper="dicom")  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "WRITING"
    assert [len(list(p.iterdir())) for p in out.iterdir()] == [1, 1]  # the fused series, and the overlay begun
    process.send_signal(signal.SIGINT)
    assert_interrupted(process, out, left=[])
