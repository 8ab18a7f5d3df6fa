"""Inference: device choice, weights integrity, and the fuser contract (shape, range, determinism)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medfuse import inference
from medfuse.errors import InvalidInputError, UsageError, WeightsError
from medfuse.inference import get_fuser, load_model, resolve_device
from medfuse.model import FusionNet


def _save_weights(path: Path, model: torch.nn.Module, sidecar: bool = True) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sidecar:
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """A small random FusionNet saved like the trained one, with a .sha256 sidecar."""
    torch.manual_seed(3)
    path = tmp_path / "tiny.safetensors"
    _save_weights(path, FusionNet((4, 8, 16)))
    return path


@pytest.fixture
def slices(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Five odd-sized slice pairs in [0, 1] with a black border, like brain slices."""
    mri = np.zeros((5, 21, 30), np.float32)
    pet = np.zeros((5, 21, 30), np.float32)
    mri[:, 3:-3, 4:-4] = rng.random((5, 15, 22), dtype=np.float32)
    pet[:, 5:-5, 6:-6] = rng.random((5, 11, 18), dtype=np.float32)
    return mri, pet


# ---- devices ------------------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_resolve_device_auto_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_without_cuda_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"--device cuda: CUDA is not available on this machine; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match=r"--device cuda:0: CUDA is not available"):
        resolve_device("cuda:0")


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match=r"--device cuda:3: this machine has 1 CUDA device"):
        resolve_device("cuda:3")


def test_auto_is_the_cpu_without_torch_where_no_nvidia_driver_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfuse import device

    def torch_asked(spec: str) -> torch.device:
        raise AssertionError(f"torch was asked about {spec}")

    monkeypatch.setattr(device, "resolve_device", torch_asked)
    monkeypatch.setattr(device.sys, "platform", "linux")
    monkeypatch.setattr(device.os.path, "exists", lambda path: False)
    assert not device.cuda_driver_visible()
    assert not device.uses_cuda("auto") and not device.uses_cuda(" CPU ")
    monkeypatch.setattr(device.os.path, "exists", lambda path: path == "/proc/driver/nvidia/version")
    assert device.cuda_driver_visible()
    with pytest.raises(AssertionError, match="torch was asked about auto"):  # a driver: only torch can tell
        device.uses_cuda("auto")
    monkeypatch.setattr(device.sys, "platform", "darwin")
    assert not device.cuda_driver_visible()


def test_uses_cuda_follows_torch_where_a_driver_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfuse import device

    monkeypatch.setattr(device, "cuda_driver_visible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device.uses_cuda("auto") and device.uses_cuda("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not device.uses_cuda("auto")
    with pytest.raises(UsageError, match="CUDA is not available"):
        device.uses_cuda("cuda")


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:x", "cuda:-1", ""])
def test_unknown_device_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match=r"--device .*unknown device; use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


# ---- weights integrity --------------------------------------------------------------------------


def test_valid_weights_load_with_their_hash(tiny_weights: Path) -> None:
    model, digest = load_model(tiny_weights)
    assert digest == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert model.channels == (4, 8, 16)
    assert not model.training


def test_weights_without_sidecar_load(tiny_weights: Path) -> None:
    tiny_weights.with_name(tiny_weights.name + ".sha256").unlink()
    model, _ = load_model(tiny_weights)
    assert model.channels == (4, 8, 16)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nowhere\.safetensors: weights file not found; check the --weights path"):
        load_model(tmp_path / "nowhere.safetensors")


def test_corrupted_weights_fail_the_hash_check(tiny_weights: Path) -> None:
    data = bytearray(tiny_weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte inside a tensor: still parses, but the hash differs
    tiny_weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"tiny\.safetensors: SHA-256 mismatch .* the file is corrupt"):
        load_model(tiny_weights)


def test_truncated_weights_are_refused(tiny_weights: Path) -> None:
    tiny_weights.with_name(tiny_weights.name + ".sha256").unlink()
    tiny_weights.write_bytes(tiny_weights.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=r"tiny\.safetensors: not a readable safetensors file \(corrupt or trunc"):
        load_model(tiny_weights)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(path)


def test_wrong_structure_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(WeightsError, match=r"other\.safetensors: not a medfuse FusionNet weights file"):
        load_model(path)
    state = {k: v.contiguous() for k, v in FusionNet((4, 8, 16)).state_dict().items()}
    del state["head.bias"]
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"other\.safetensors: not a medfuse FusionNet weights file"):
        load_model(path)


def test_weights_of_the_three_map_head_are_refused_with_a_remedy(tmp_path: Path) -> None:
    """Weights of the earlier network (its head gave the MRI's and PET's weights and an offset) name the change."""
    state = {k: v.contiguous() for k, v in FusionNet((4, 8, 16)).state_dict().items()}
    state["head.weight"], state["head.bias"] = state["head.weight"][:12].clone(), state["head.bias"][:12].clone()
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        WeightsError,
        match=r"old\.safetensors: weights of an earlier medfuse network, whose head .*"
        r"retrain them with `medfuse train`",
    ):
        load_model(path)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    model = FusionNet((4, 8, 16))
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    path = tmp_path / "nan.safetensors"
    _save_weights(path, model)
    with pytest.raises(WeightsError, match=r"nan\.safetensors: the weights contain NaN"):
        load_model(path)


def test_malformed_sidecar_is_refused(tiny_weights: Path) -> None:
    tiny_weights.with_name(tiny_weights.name + ".sha256").write_text("not a digest\n")
    with pytest.raises(WeightsError, match=r"tiny\.safetensors\.sha256: the checksum file holds no SHA-256 digest"):
        load_model(tiny_weights)


@pytest.mark.parametrize("kind", ["uptake", "colour"])
def test_bundled_weights_match_the_pinned_hash(kind: inference.InputKind) -> None:
    path = inference.bundled_weights_path(kind)
    assert path.is_file(), f"bundled weights missing at {path}"
    assert path.name == inference.BUNDLED[kind].weights_name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == inference.BUNDLED[kind].weights_sha256
    model, digest = load_model(kind=kind)
    assert digest == inference.BUNDLED[kind].weights_sha256
    assert model.stride >= 4


def test_bundled_weights_with_a_wrong_pin_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = dataclasses.replace(inference.BUNDLED["colour"], weights_sha256="0" * 64)
    monkeypatch.setitem(inference.BUNDLED, "colour", wrong)
    with pytest.raises(WeightsError, match=r"fusionnet_v2_2d.safetensors: SHA-256 mismatch \(expected 000000000000…"):
        load_model(kind="colour")


def test_missing_bundled_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(inference, "bundled_weights_path", lambda kind: tmp_path / "gone.safetensors")
    with pytest.raises(WeightsError, match=r"gone\.safetensors: the bundled weights are missing; reinstall medfuse"):
        load_model()


# ---- the fuser contract -------------------------------------------------------------------------


def test_fuser_attributes(tiny_weights: Path) -> None:
    fuser = get_fuser("net", weights=tiny_weights, device="cpu")
    assert fuser.method == "net"
    assert fuser.device == "cpu"
    assert fuser.weights_sha256 == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()


def test_fuse_keeps_shape_dtype_and_range(tiny_weights: Path, slices: tuple[np.ndarray, np.ndarray]) -> None:
    fuser = get_fuser("net", weights=tiny_weights, device="cpu")
    mri, pet = slices
    stacked = fuser.fuse(mri, pet)
    single = fuser.fuse(mri[0], pet[0])
    assert stacked.shape == mri.shape and stacked.dtype == np.float32
    assert single.shape == mri.shape[1:] and single.dtype == np.float32
    assert stacked.min() >= 0.0 and stacked.max() <= 1.0
    np.testing.assert_array_equal(single, stacked[0])


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 8), (8, 33)])
def test_any_size_is_padded_and_cropped_back(tiny_weights: Path, shape: tuple[int, int]) -> None:
    fuser = get_fuser("net", weights=tiny_weights, device="cpu")
    rng = np.random.default_rng(0)
    mri, pet = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    fused = fuser.fuse(mri, pet)
    assert fused.shape == shape
    # the same as running the network by hand on the edge-padded slice and cropping
    model, _ = load_model(tiny_weights)
    pad = ((0, -shape[0] % model.stride), (0, -shape[1] % model.stride))
    a = torch.from_numpy(np.pad(mri, pad, mode="edge"))[None, None]
    b = torch.from_numpy(np.pad(pet, pad, mode="edge"))[None, None]
    with torch.inference_mode():
        expected = model(a, b).clamp(0, 1)[0, 0, : shape[0], : shape[1]].numpy()
    np.testing.assert_allclose(fused, expected, atol=1e-6)


def test_results_do_not_depend_on_batch_size_threads_or_run(
    tiny_weights: Path, slices: tuple[np.ndarray, np.ndarray]
) -> None:
    mri, pet = slices
    previous = torch.get_num_threads()
    try:
        reference = get_fuser("net", weights=tiny_weights, device="cpu", threads=1, batch_size=16).fuse(mri, pet)
        for threads, batch_size in ((2, 1), (3, 2), (4, 16)):
            fuser = get_fuser("net", weights=tiny_weights, device="cpu", threads=threads, batch_size=batch_size)
            assert np.array_equal(fuser.fuse(mri, pet), reference), (threads, batch_size)
            assert np.array_equal(fuser.fuse(mri, pet), reference), "second run differs"
    finally:
        torch.set_num_threads(previous)


def test_fuse_leaves_the_torch_thread_count_alone(tiny_weights: Path, slices: tuple[np.ndarray, np.ndarray]) -> None:
    previous = torch.get_num_threads()
    try:
        fuser = get_fuser("net", weights=tiny_weights, device="cpu", threads=2)
        fuser.fuse(*slices)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_black_inputs_give_black_output(tiny_weights: Path) -> None:
    fuser = get_fuser("net", weights=tiny_weights, device="cpu")
    fused = fuser.fuse(np.zeros((2, 12, 12), np.float32), np.zeros((2, 12, 12), np.float32))
    assert fused.shape == (2, 12, 12)
    assert np.all(fused == 0)


def test_mismatched_shapes_are_refused(tiny_weights: Path) -> None:
    fuser = get_fuser("net", weights=tiny_weights, device="cpu")
    with pytest.raises(InvalidInputError, match=r"the MRI \(4, 4\) and PET \(4, 5\) slices must have the same"):
        fuser.fuse(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(InvalidInputError, match=r"must have the same non-empty \(H, W\) or \(N, H, W\) shape"):
        fuser.fuse(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32))


def test_unknown_method_names_the_option() -> None:
    with pytest.raises(UsageError, match=r"--method magic: unknown method; use net or laplacian"):
        get_fuser("magic")


def test_laplacian_method_returns_the_baseline() -> None:
    laplacian = pytest.importorskip("medfuse.laplacian")
    fuser = get_fuser("laplacian")
    assert isinstance(fuser, laplacian.LaplacianFuser)
    assert fuser.method == "laplacian"


def test_bad_batch_size_and_threads(tiny_weights: Path) -> None:
    with pytest.raises(UsageError, match=r"--batch-size 0"):
        get_fuser("net", weights=tiny_weights, batch_size=0)
    with pytest.raises(UsageError, match=r"--threads 0"):
        get_fuser("net", weights=tiny_weights, threads=0)


@pytest.mark.parametrize("kind", ["uptake", "colour"])
def test_bundled_network_keeps_black_background_black(kind: inference.InputKind) -> None:
    """Neither trained network may add haze where both sources are black."""
    fuser = get_fuser("net", device="cpu", kind=kind)
    mri = np.zeros((64, 64), np.float32)
    pet = np.zeros((64, 64), np.float32)
    mri[16:48, 16:48] = 0.6
    pet[24:40, 24:40] = 0.9
    fused = fuser.fuse(mri, pet)
    assert np.all(fused[mri + pet == 0] == 0)
    assert fused[28:36, 28:36].mean() > 0.5  # the hot spot survives
    assert fused[18:22, 18:46].mean() > 0.3  # and so does the anatomy around it


@pytest.mark.slow
def test_bundled_network_on_atlas_slices(harvard_dir: Path) -> None:
    """On three slices of PET series 41 (colour luminance) the 2-D network keeps edges (Qabf) and a black
    background."""
    from medfuse.metrics import luminance_255, qabf
    from medfuse.training import load_pairs, training_split

    _, val = training_split(load_pairs(harvard_dir, "PET"), ("PET41",))
    mri, pet = val.mri[30:33], val.functional[30:33]
    fused = get_fuser("net", device="cpu", threads=2, kind="colour").fuse(mri, pet)
    assert np.all(fused[np.maximum(mri, pet) < 0.5 / 255] == 0)
    triples = zip(fused, mri, pet, strict=True)
    scores = [qabf(luminance_255(f), luminance_255(a), luminance_255(b)) for f, a, b in triples]
    assert np.mean(scores) > 0.7
