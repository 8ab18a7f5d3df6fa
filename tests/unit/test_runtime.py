"""CPU backends of the network: ONNX Runtime (default) against eager PyTorch, determinism, fallbacks."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from medfuse import runtime
from medfuse.errors import UsageError
from medfuse.inference import InputKind, NetFuser, load_model
from medfuse.model import FusionNet


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """A small random FusionNet in a safetensors file (no sidecar: any user file loads)."""
    torch.manual_seed(5)
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in FusionNet((4, 8, 16)).state_dict().items()}, str(path))
    return path


def _brain_slices(count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured discs (MRI) and a smooth hot spot (PET) with black borders, float32 in [0, 1]."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.15
    mri = (rng.random((count, height, width)) * 0.6 + 0.2) * disc
    pet = disc * np.exp(-((yy - 0.4) ** 2 + (xx - 0.55) ** 2) / 0.01) + 0.2 * disc
    return mri.astype(np.float32), np.clip(np.repeat(pet[None], count, axis=0), 0, 1).astype(np.float32)


def _torch_reference(model: nn.Module, mri: np.ndarray, pet: np.ndarray, stride: int) -> np.ndarray:
    height, width = mri.shape[1:]
    pad = ((0, 0), (0, -height % stride), (0, -width % stride))
    a = torch.from_numpy(np.pad(mri, pad, mode="edge"))[:, None]
    b = torch.from_numpy(np.pad(pet, pad, mode="edge"))[:, None]
    with torch.inference_mode():
        return model(a, b).clamp(0, 1)[:, 0, :height, :width].numpy()


@pytest.mark.slow
def test_onnxruntime_is_the_default_and_matches_float32_pytorch() -> None:
    mri, pet = _brain_slices(3, 200, 232)  # a head crop: not a multiple of the stride
    fuser = NetFuser(device="cpu", threads=2)
    assert fuser.backend == "onnxruntime"
    model, _ = load_model()
    expected = _torch_reference(model, mri, pet, model.stride)
    assert float(np.max(np.abs(fuser.fuse(mri, pet) - expected))) <= 1e-3
    torch_fuser = NetFuser(device="cpu", threads=2, backend="torch")
    assert torch_fuser.backend == "torch"
    assert float(np.max(np.abs(torch_fuser.fuse(mri, pet) - expected))) <= 1e-5


@pytest.mark.parametrize("kind", ["uptake", "colour"])
def test_the_bundled_graph_is_the_bundled_weights_and_needs_no_torch(tmp_path: Path, kind: InputKind) -> None:
    """Each committed ONNX graph names its committed weights and computes what they compute in PyTorch."""
    from medfuse import inference

    bundled = inference.BUNDLED[kind]
    loaded = inference.load_bundled_graph(kind)
    assert loaded is not None, f"weights/{bundled.graph_name} is missing: python -m medfuse.inference"
    runner, stride = loaded
    assert runner.metadata[inference.GRAPH_WEIGHTS_KEY] == bundled.weights_sha256
    model, _ = load_model(kind=kind)
    assert stride == model.stride
    inference_form = model.for_inference()
    mri, pet = _brain_slices(2, 96, 128)
    for index in range(2):
        a, b = mri[index : index + 1, None], pet[index : index + 1, None]
        with torch.inference_mode():
            expected = inference_form(torch.from_numpy(a), torch.from_numpy(b))[0, 0].numpy()
        np.testing.assert_allclose(runner(a, b), expected, atol=1e-5)
    # Rebuilding it from the weights gives the same graph (the command the model card names).
    rebuilt = tmp_path / "graph.onnx"
    assert inference.export_bundled_graph(inference.bundled_weights_path(kind), rebuilt) == bundled.graph_sha256


@pytest.mark.slow
def test_a_default_fuser_never_imports_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from medfuse.inference import NetFuser\n"
        "fuser = NetFuser(device='cpu')\n"
        "out = fuser.fuse(np.full((2, 40, 40), 0.5, np.float32), np.zeros((2, 40, 40), np.float32))\n"
        "assert out.shape == (2, 40, 40) and fuser.backend == 'onnxruntime', fuser.backend\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_damaged_or_stale_bundled_graph_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfuse import inference
    from medfuse.errors import WeightsError

    bundled = inference.BUNDLED["uptake"]
    graph = inference.bundled_weights_path().with_name(bundled.graph_name).read_bytes()
    weights = tmp_path / bundled.weights_name
    monkeypatch.setattr(inference, "bundled_weights_path", lambda kind: weights)
    assert inference.load_bundled_graph() is None  # no graph beside the weights: they load into PyTorch
    damaged = bytearray(graph)
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / bundled.graph_name).write_bytes(bytes(damaged))
    with pytest.raises(WeightsError, match=r"fusionnet_v2.onnx: SHA-256 mismatch .*reinstall medfuse"):
        NetFuser(device="cpu")
    stale = runtime.export_onnx(FusionNet((4, 8, 16)).eval(), 16, {inference.GRAPH_WEIGHTS_KEY: "0" * 64})
    (tmp_path / bundled.graph_name).write_bytes(stale)
    stale_pin = dataclasses.replace(bundled, graph_sha256=hashlib.sha256(stale).hexdigest())
    monkeypatch.setitem(inference.BUNDLED, "uptake", stale_pin)
    with pytest.raises(WeightsError, match=r"exported from other weights than fusionnet_v2.safetensors"):
        NetFuser(device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", runtime.CPU_BACKENDS)
def test_each_backend_is_bit_identical_across_threads_batches_and_runs(tiny_weights: Path, backend: str) -> None:
    mri, pet = _brain_slices(7, 45, 61)
    reference = NetFuser(tiny_weights, device="cpu", threads=1, batch_size=16, backend=backend).fuse(mri, pet)
    for threads, batch_size in ((2, 1), (3, 4), (2, 16)):
        fuser = NetFuser(tiny_weights, device="cpu", threads=threads, batch_size=batch_size, backend=backend)
        assert fuser.backend == backend
        assert np.array_equal(fuser.fuse(mri, pet), reference), (threads, batch_size)
        assert np.array_equal(fuser.fuse(mri, pet), reference), "a second run differs"
    assert np.array_equal(NetFuser(tiny_weights, device="cpu", backend=backend).fuse(mri[3], pet[3]), reference[3])


class _UnshuffleNet(nn.Module):
    """Another architecture (space-to-depth stem, sigmoid gate, pixel shuffle out): the export is generic."""

    stride = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encode = nn.Conv2d(8, 16, 3, padding=1)
        self.gate = nn.Conv2d(16, 1, 1)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.encode(torch.cat((F.pixel_unshuffle(mri, 2), F.pixel_unshuffle(pet, 2)), 1)), 0.1)
        coarse = F.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = x * torch.sigmoid(self.gate(x)) + coarse
        return F.pixel_shuffle(self.head(x), 2)


@pytest.mark.parametrize("model", [FusionNet((4, 8, 12)).eval(), _UnshuffleNet().eval()], ids=["fusionnet", "other"])
def test_the_export_follows_any_network_and_any_size(model: nn.Module) -> None:
    stride = int(model.stride)  # type: ignore[arg-type]
    onnx_runner, fallback = runtime.cpu_runner(model, stride, "onnxruntime")
    assert fallback is None and onnx_runner.name == "onnxruntime"
    torch_runner = runtime.TorchRunner(model)
    rng = np.random.default_rng(1)
    for height, width in ((stride, stride), (5 * stride, 3 * stride), (64, 96)):
        mri, pet = (rng.random((1, 1, height, width), dtype=np.float32) for _ in range(2))
        np.testing.assert_allclose(onnx_runner(mri, pet), torch_runner(mri, pet), atol=1e-5)


def test_exports_from_several_threads_at_once_all_succeed(tiny_weights: Path) -> None:
    """Three threads make runners of one fresh model at once, several rounds: none may fall back. Before the
    channels-last conversion shared the export's lock, about 1 round in 20 read freed memory (probe off by 1e15)."""
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(8):
        model, _ = load_model(tiny_weights)
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(runtime.cpu_runner, [model] * 3, [model.stride] * 3))
        assert [(runner.name, reason) for runner, reason in results] == [("onnxruntime", None)] * 3


def test_a_failed_export_falls_back_to_pytorch_with_a_warning(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model: nn.Module, stride: int) -> bytes:
        raise RuntimeError("unsupported operator aten::fancy")

    monkeypatch.setattr(runtime, "export_onnx", broken)
    with pytest.warns(UserWarning, match=r"runs on PyTorch instead of onnxruntime.*aten::fancy"):
        fuser = NetFuser(tiny_weights, device="cpu")
    assert fuser.backend == "torch"
    mri, pet = _brain_slices(2, 16, 16)
    assert fuser.fuse(mri, pet).shape == (2, 16, 16)


def test_an_export_that_changes_the_results_is_not_used(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model(tiny_weights)
    wrong = FusionNet(model.channels).eval()  # same layout, other (random) weights
    real_export = runtime.export_onnx
    monkeypatch.setattr(runtime, "export_onnx", lambda _model, stride: real_export(wrong, stride))
    runner, reason = runtime.cpu_runner(model, model.stride)
    assert runner.name == "torch"
    assert reason is not None and "differs from PyTorch" in reason


def test_without_onnxruntime_the_network_runs_on_pytorch(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails as if not installed
    model, _ = load_model(tiny_weights)
    runner, reason = runtime.cpu_runner(model, model.stride)
    assert runner.name == "torch"
    assert reason is not None and "onnxruntime not installed" in reason


def test_without_onnxruntime_the_bundled_network_runs_on_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.warns(UserWarning, match=r"runs on PyTorch instead of onnxruntime.*onnxruntime not installed"):
        fuser = NetFuser(device="cpu")
    assert fuser.backend == "torch"


def test_unknown_backend_is_a_usage_error(tiny_weights: Path) -> None:
    with pytest.raises(UsageError, match="backend tensorrt: unknown"):
        NetFuser(tiny_weights, device="cpu", backend="tensorrt")
