"""Running a loaded network on the CPU, one slice at a time on the calling thread: ONNX Runtime or PyTorch.

:class:`~medfuse.inference.NetFuser` runs ``threads`` slices side by side, each computed from start to
end by one thread, so results are bit-identical whatever ``--threads`` or ``--batch-size`` (see
:mod:`medfuse.inference`). A *runner* here computes one ``(1, 1, H, W)`` pair that way.

* ``onnxruntime`` (the default): the network as an ONNX graph, run by an ONNX Runtime session with one
  intra-op thread. Its kernels and graph fusions (convolution + activation, no per-layer Python
  dispatch) make the network up to 2x faster than eager PyTorch; benchmarks/bench_model.py compares
  them. The bundled weights come with their graphs (``weights/fusionnet_v2.onnx`` and ``_2d.onnx``, see
  :mod:`medfuse.inference`), so the default run never imports torch; other weights are exported to
  ONNX in memory when loaded (``torch.onnx``, traced from the loaded module, so any network built
  from standard layers works; nothing is written to disk).
* ``torch``: eager PyTorch in channels-last memory (oneDNN convolutions), one thread per slice.

Before a network exported at load is used, it fuses a small probe pair and its result is compared with
PyTorch's; any export problem (a layer ONNX cannot express, a missing ``onnx`` package) falls back to
``torch`` and says why in :attr:`OnnxRunner.fallback_reason`.
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

CPU_BACKENDS = ("onnxruntime", "torch")
DEFAULT_CPU_BACKEND = "onnxruntime"
#: Largest difference from PyTorch's float32 output accepted for an exported network (the probe check).
EXPORT_TOLERANCE = 1e-4
_OPSET = 17
#: Held while a shared model is changed in place (its conversion to channels-last) or exported: either,
#: done while another thread exports or runs the same model, can hand that thread freed memory.
_MODEL_LOCK = threading.Lock()


class SliceRunner(Protocol):
    """Computes the raw network output of one slice pair on the calling thread."""

    name: str

    def __call__(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """``(1, 1, H, W)`` float32 C-contiguous MRI and PET -> ``(H, W)`` float32 (not clamped)."""
        ...


class TorchRunner:
    """Eager PyTorch, channels-last, one thread (set per call: the setting is per thread under OpenMP)."""

    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        import torch

        with _MODEL_LOCK:  # the first conversion rewrites the parameters; later ones leave them as they are
            self._model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def __call__(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                a = torch.from_numpy(mri).contiguous(memory_format=torch.channels_last)
                b = torch.from_numpy(pet).contiguous(memory_format=torch.channels_last)
                return self._model(a, b)[0, 0].numpy()
        finally:
            torch.set_num_threads(previous)


class OnnxRunner:
    """An ONNX graph (bytes) run by ONNX Runtime with one thread per call; ``metadata`` is the graph's own."""

    name = "onnxruntime"

    def __init__(self, graph: bytes) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # each call runs on its calling thread, start to end
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ONNX Runtime's notes would clutter stderr
        self._session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    def __call__(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        output = self._session.run(None, {"mri": mri, "pet": pet})[0]
        return np.asarray(output[0, 0], dtype=np.float32)


def export_onnx(model: nn.Module, stride: int, metadata: dict[str, str] | None = None) -> bytes:
    """The model as an ONNX graph (bytes) with free batch, height and width (multiples of ``stride``),
    carrying ``metadata`` (text keys and values, e.g. the weights it was exported from).

    One export at a time per process: the exporter keeps global state (two fusions started together,
    each loading its model on a helper thread, would otherwise break each other's export).
    """
    import torch

    size = 4 * stride
    example = (torch.zeros(1, 1, size, size), torch.zeros(1, 1, size, size))
    axes = {0: "slices", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with _MODEL_LOCK, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's concern
        torch.onnx.export(
            model,
            example,
            buffer,  # type: ignore[arg-type]  # a binary file object works (documented)
            dynamo=False,
            input_names=["mri", "pet"],
            output_names=["fused"],
            dynamic_axes={"mri": axes, "pet": axes, "fused": axes},
            opset_version=_OPSET,
        )
    if not metadata:
        return buffer.getvalue()
    import onnx

    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, metadata)
    return bytes(graph.SerializeToString())


def probe_pair(stride: int) -> tuple[np.ndarray, np.ndarray]:
    """A small deterministic MRI/PET pair (textured disc, smooth blob, black corners) for checking a backend."""
    size = 6 * stride
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.16
    mri = disc * (0.4 + 0.3 * np.sin(40.0 * xx) * np.cos(30.0 * yy))
    pet = disc * np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.02)
    return (
        np.ascontiguousarray(mri[None, None], dtype=np.float32),
        np.ascontiguousarray(pet[None, None], dtype=np.float32),
    )


def cpu_runner(model: nn.Module, stride: int, backend: str = DEFAULT_CPU_BACKEND) -> tuple[SliceRunner, str | None]:
    """The runner for ``backend``, and why it fell back to ``torch`` (``None`` when it did not).

    An ONNX Runtime runner is used only when its output on :func:`probe_pair` is within
    :data:`EXPORT_TOLERANCE` of PyTorch's.
    """
    torch_runner = TorchRunner(model)
    if backend == "torch":
        return torch_runner, None
    try:
        runner = OnnxRunner(export_onnx(model, stride))
    except ImportError as exc:
        return torch_runner, f"ONNX Runtime export unavailable ({exc.name or exc} not installed)"
    except Exception as exc:  # any exporter or session failure: the PyTorch path still works
        return torch_runner, f"the network could not be exported to ONNX ({type(exc).__name__}: {exc})"
    mri, pet = probe_pair(stride)
    difference = float(np.max(np.abs(runner(mri, pet) - torch_runner(mri, pet))))
    if not difference <= EXPORT_TOLERANCE:
        return torch_runner, f"the exported network differs from PyTorch by {difference:.1e} on a probe slice"
    return runner, None
