"""The pipeline's speed work keeps results: grids shared, model loaded aside, slices prepared aside, parallel writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import FakeFuser, Grid, phantom_mri, phantom_pet, rigid

from medfuse import colour, pipeline, registration
from medfuse.atomic import output_transaction
from medfuse.console import MedfuseWarning
from medfuse.errors import OutputError, ProcessingError, WeightsError
from medfuse.options import FuseOptions

MRI_GRID = Grid((48, 60, 50), (3.2, 3.0, 3.1), centre=(2.0, -3.0, 5.0))
PET_GRID = Grid((40, 40, 36), (4.0, 4.0, 4.4), centre=(-4.0, 6.0, 2.0))


@pytest.fixture(scope="module")
def pair() -> tuple[sitk.Image, sitk.Image]:
    return phantom_mri(MRI_GRID), phantom_pet(PET_GRID, rigid((4.0, -3.0, 5.0), (6.0, -5.0, 8.0)))


@pytest.mark.slow
def test_shared_grids_make_each_grid_once_and_the_same(
    pair: tuple[sitk.Image, sitk.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfuse.registration import grids

    mri = pair[0]
    made: list[float] = []
    real = grids._make_grid

    def counting(image: sitk.Image, spacing: float, antialias: bool) -> sitk.Image:
        made.append(spacing)
        return real(image, spacing, antialias)

    monkeypatch.setattr(grids, "_make_grid", counting)
    alone = sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI", dilate_mm=3.0))
    with registration.shared_grids():
        first = sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI", dilate_mm=3.0))
        second = sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI"))
        other = registration.foreground_mask(sitk.Image(mri), "MRI")  # another object: its own grid
    assert made == [registration.WORK_SPACING_MM] * 3
    assert np.array_equal(first, alone) and second.shape == alone.shape and other.GetSize() == mri.GetSize()
    registration.foreground_mask(mri, "MRI")  # outside the block nothing is kept
    assert len(made) == 4 and grids._GRIDS is None


def test_prepared_aside_the_batches_are_the_same_whatever_their_size(pair: tuple[sitk.Image, sitk.Image]) -> None:
    results = [
        pipeline.fuse_images(*pair, FuseOptions(batch_size=size, register="none"), fuser=FakeFuser())
        for size in (1, 5, 64)
    ]
    for result in results[1:]:
        assert np.array_equal(sitk.GetArrayViewFromImage(result.fused), sitk.GetArrayViewFromImage(results[0].fused))
        assert np.array_equal(
            sitk.GetArrayViewFromImage(result.overlay), sitk.GetArrayViewFromImage(results[0].overlay)
        )


def test_a_fuser_failure_in_the_middle_surfaces(pair: tuple[sitk.Image, sitk.Image]) -> None:
    class Breaking(FakeFuser):
        def fuse(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
            if len(self.calls) == 2:
                return np.full_like(mri, np.nan)
            return super().fuse(mri, pet)

    with pytest.raises(ProcessingError, match="non-finite values"):
        pipeline.fuse_images(*pair, FuseOptions(batch_size=4, register="none"), fuser=Breaking())


def test_overlay_colours_from_the_offset_table_equal_the_ycbcr_conversion() -> None:
    values = np.linspace(-0.1, 1.1, 41 * 122, dtype=np.float32).reshape(41, 122)
    luminance = np.random.default_rng(0).random(values.shape, dtype=np.float32)
    for name in colour.COLORMAPS:
        _y, cb, cr = colour.rgb_to_ycbcr(colour.apply_colormap(values, name))
        expected = colour.ycbcr_to_rgb(luminance, cb, cr, keep_luminance=False)
        offsets = colour.colormap_rgb_offsets(values, name)
        np.testing.assert_allclose(np.clip(luminance[..., None] + offsets, 0.0, 1.0), expected, atol=1e-6)
        assert float(np.abs(offsets).max()) > (0.1 if name != "grey" else -1.0), name  # colours, not greys


def test_the_hotspot_readout_runs_beside_the_registration_and_a_failed_registration_releases_it(
    pair: tuple[sitk.Image, sitk.Image], monkeypatch: pytest.MonkeyPatch
) -> None:

    started_during_registration: list[bool] = []
    real_place_pet = registration.place_pet

    def watched(*args: object, **kwargs: object) -> object:
        time.sleep(0.2)  # the readout has started meanwhile, and waits for the transform to place its points
        started_during_registration.append(any(t.name == "medfuse-hotspots" for t in threading.enumerate()))
        return real_place_pet(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registration, "place_pet", watched)
    result = pipeline.fuse_images(*pair, FuseOptions(batch_size=8), fuser=FakeFuser())
    assert started_during_registration == [True]
    assert result.report["hotspots"]["max"]["mri_voxel"] is not None  # placed on the MRI through the transform

    def failing(*args: object, **kwargs: object) -> object:
        raise ProcessingError("the registration failed")

    monkeypatch.setattr(registration, "place_pet", failing)
    with pytest.raises(ProcessingError, match="the registration failed"):
        pipeline.fuse_images(*pair, FuseOptions(), fuser=FakeFuser())
    deadline = time.monotonic() + 10.0
    while any(t.name == "medfuse-hotspots" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "medfuse-hotspots" for t in threading.enumerate()), "the readout waits forever"


def test_the_hotspot_readout_thread_never_imports() -> None:
    """Seen under load (2 of 40 Ctrl-C runs while torch loaded): the readout imported its modules on its own
    thread, a Ctrl-C lost in an import's clean-up had left the import lock held, and the process hung on exit
    waiting for the thread. Its modules are now imported before it starts (checked in a fresh interpreter)."""
    code = """
import sys, threading
import SimpleITK as sitk
from concurrent.futures import Future
from medfuse import pipeline
assert "medfuse.hotspots" not in sys.modules
imported_at_start = []
real_start = threading.Thread.start
def start(self):
    imported_at_start.append(all(m in sys.modules for m in ("medfuse.hotspots", "medfuse.memory", "scipy.ndimage")))
    real_start(self)
threading.Thread.start = start
transform = Future()
transform.set_result(sitk.Transform(3, sitk.sitkIdentity))
image = sitk.Image(12, 12, 12, sitk.sitkFloat32)
readout = pipeline._hotspots_aside(image, image, transform, None, "pet.nii.gz")
readout.result(timeout=60)
print(imported_at_start)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True]"


@pytest.mark.slow
def test_the_model_loads_while_inputs_are_read_and_its_errors_still_stop_the_run(
    pair: tuple[sitk.Image, sitk.Image], tmp_path: Path
) -> None:
    mri_path, pet_path = tmp_path / "mri.nii.gz", tmp_path / "pet.nii.gz"
    sitk.WriteImage(pair[0], str(mri_path))
    sitk.WriteImage(pair[1], str(pet_path))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match=r"broken\.safetensors"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "out" / "fused.nii.gz", FuseOptions(weights=broken))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    result = pipeline.fuse_files(mri_path, pet_path, tmp_path / "fused.nii.gz", FuseOptions(method="laplacian"))
    timings = result.report["timings_s"]
    assert list(timings)[:5] == ["load_mri", "load_pet", "register", "resample", "load_fuser"]
    assert result.report["fusion"]["method"] == "laplacian"


def test_parallel_writes_appear_together_or_not_at_all(tmp_path: Path) -> None:
    def slow_text(text: str) -> Callable[[Path], int]:
        return lambda path: path.write_text(text)

    with output_transaction() as transaction:
        transaction.write_parallel([(tmp_path / f"{n}.txt", slow_text(str(n))) for n in range(4)])
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["0", "1", "2", "3"]

    def disk_full(path: Path) -> None:
        raise OSError(28, "No space left on device")

    folder = tmp_path / "second"
    with (
        pytest.raises(OutputError, match=r"b\.txt: could not be written \(No space left on device\)"),
        pytest.warns(MedfuseWarning, match="did not exist and was created"),
        output_transaction() as transaction,
    ):
        transaction.write_parallel([(folder / "a.txt", slow_text("a")), (folder / "b.txt", disk_full)])
    assert not folder.exists()


@pytest.mark.parametrize("handler", ["python's own", "the command line's"])
def test_ctrl_c_during_parallel_writes_waits_for_every_writer_then_rolls_back(
    handler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: a signal while the writers ran ended the wait by joining the threads, Python 3.11 then
    took a writer still running for ended, and the process aborted ("FATAL: exception not rethrown") or
    left the file that writer made after the rollback.

    The command line's handler is deferred while the writers start, so its Ctrl-C may land at once;
    Python's own handler (library use) is waited through once the writers run: there the Ctrl-C comes
    when the run waits for them (while the threads start, Python's own handler could still cut in).
    """
    import concurrent.futures

    from medfuse import console

    monkeypatch.setattr(console, "_interruption", threading.Event())
    cli = handler == "the command line's"
    previous = signal.signal(signal.SIGINT, console.note_interrupt if cli else signal.default_int_handler)
    finished: list[str] = []
    waiting = threading.Event()
    real_wait = concurrent.futures.wait

    def noted_wait(*args: Any, **kwargs: Any) -> Any:
        waiting.set()
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "wait", noted_wait)
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def slow(path: Path) -> None:
        if path.name.startswith(".0."):  # the temporary name of 0.txt
            if not cli:
                assert waiting.wait(timeout=10.0)
            signal.pthread_kill(main_thread, signal.SIGINT)  # Ctrl-C reaches the main thread
        time.sleep(0.3)
        path.write_text("complete")
        finished.append(path.name[:2])

    try:
        with pytest.raises(KeyboardInterrupt), output_transaction() as transaction:
            transaction.write_parallel([(tmp_path / f"{n}.txt", slow) for n in range(3)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(finished) == [".0", ".1", ".2"] and not any(tmp_path.iterdir())


@pytest.fixture
def lost_ctrl_c() -> Iterator[None]:
    """A Ctrl-C the command-line handler noted but whose KeyboardInterrupt Python swallowed."""
    from medfuse import console

    with pytest.raises(KeyboardInterrupt):
        console.note_interrupt(signal.SIGINT, None)
    yield
    console._interruption.clear()


def test_a_lost_ctrl_c_still_ends_the_wait_for_the_model(lost_ctrl_c: None) -> None:
    """Seen under load: Ctrl-C while the model imported torch on its thread raised KeyboardInterrupt inside
    an import's clean-up callback; Python reported it as ignored and the run waited for the model forever."""
    never_loaded: Future[object] = Future()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline._wait_for(never_loaded)
    assert time.monotonic() - started < 5.0


def test_a_lost_ctrl_c_prints_no_traceback_and_other_lost_errors_still_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfuse.cli import _unraisable_but_interrupt

    class RaisesWhenCollected:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error

    monkeypatch.setattr(sys, "unraisablehook", _unraisable_but_interrupt)
    RaisesWhenCollected(KeyboardInterrupt())  # collected at once: Python cannot raise from __del__
    assert capsys.readouterr().err == ""
    RaisesWhenCollected(ValueError("a real problem"))
    assert "a real problem" in capsys.readouterr().err


def test_a_ctrl_c_inside_the_import_machinery_is_sent_again_once_out_of_it() -> None:
    """Seen in CI: the Ctrl-C landed in an import's clean-up callback with the global import lock taken;
    raised there it was lost and the lock stayed held, so the model's import on its thread never ended
    and the process aborted at exit. It must come back a moment later instead, and raise outside imports."""
    from medfuse.console import interrupt_outside_imports

    namespace: dict[str, Any] = {}
    exec(compile("import sys\nframe = sys._getframe()", "<frozen importlib._bootstrap>", "exec"), namespace)
    received = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.set())
    try:
        interrupt_outside_imports(signal.SIGUSR1, namespace["frame"])  # no KeyboardInterrupt here
        deadline = time.monotonic() + 5.0
        while not received.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread, between bytecodes
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received.is_set(), "the signal was not sent again"
    with pytest.raises(KeyboardInterrupt):
        interrupt_outside_imports(signal.SIGUSR1, sys._getframe())
