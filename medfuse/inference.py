"""Running the fusion network: device choice, weights integrity and batched slice fusion.

Weights are safetensors files (no pickled code is executed when loading). The bundled file's SHA-256
is pinned here and checked before every load; a user file given with ``--weights`` is checked against
a ``<file>.sha256`` sidecar when one exists. Every problem with a weights file becomes a
:class:`~medfuse.errors.WeightsError` naming it.

Two weight files ship, one per kind of PET input (:data:`BUNDLED`): ``fusionnet_v2`` for volumes, whose
PET reaches the network as windowed uptake, and ``fusionnet_v2_2d`` for 2-D images, whose PET is the
luminance of a pseudo-colour picture (the fusion benchmarks' convention, not monotonic in uptake).
Each is trained for its input alone (model card). A ``--weights`` file serves both kinds.

Each bundled file also ships as the ONNX graph of the network's inference form (``<name>.onnx``,
SHA-256 pinned too, naming in its metadata the weights it was exported from; rebuilt with
``python -m medfuse.inference``). On the CPU with ONNX Runtime (the default) that graph is run
directly, so a run never imports torch: a second less at every start (a CLI run, each batch worker)
and almost half a second less at exit. Other weights, CUDA and ``backend="torch"`` load the
safetensors file into PyTorch.

On the CPU every slice is computed by one thread from start to end, and ``threads`` slices run side
by side. Convolution libraries split some reductions differently for different thread counts (the
1x1 convolutions of oneDNN do), which changes the last bits of the result; computing each slice
single-threaded makes the output bit-identical whatever ``--threads``, ``batch_size`` or the way a
volume is cut into batches. The slice itself runs on ONNX Runtime (default) or eager PyTorch, see
:mod:`medfuse.runtime`; on CUDA the whole batch runs in PyTorch, float32.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from medfuse.console import warn
from medfuse.device import check_device, resolve_device, usable_cpus, uses_cuda
from medfuse.errors import InvalidInputError, UsageError, WeightsError
from medfuse.options import FuseOptions, Method

if TYPE_CHECKING:
    import torch

    from medfuse.model import FusionNet
    from medfuse.runtime import OnnxRunner, SliceRunner

#: The PET input a network is fed: windowed uptake (volumes) or a pseudo-colour image's luminance (2-D images).
InputKind = Literal["uptake", "colour"]


@dataclass(frozen=True)
class BundledNetwork:
    """A weights file shipped with medfuse and its ONNX graph, each with its pinned SHA-256."""

    weights_name: str
    weights_sha256: str
    graph_name: str
    graph_sha256: str


#: The bundled network of each input kind.
BUNDLED: dict[InputKind, BundledNetwork] = {
    "uptake": BundledNetwork(
        "fusionnet_v2.safetensors",
        "b43177d4f7269b66db375fd26320e4537f36ef5d42c24de6a586f881333d1a13",
        "fusionnet_v2.onnx",
        "b35f0133e79950b26ffbd543debf12c8b04a1444628b62d3e1e4e44eed29d0a9",
    ),
    "colour": BundledNetwork(
        "fusionnet_v2_2d.safetensors",
        "161a8c5c22c8a0924e4f544ea3197db4c23e648692bd0fe331d1e6108415f5be",
        "fusionnet_v2_2d.onnx",
        "443e468b3a4a4ce65725d23886caee6bece05a60da977445a39759395b253392",
    ),
}
#: Keys of the bundled graph's metadata: the SHA-256 of the weights it holds, and the network's stride.
GRAPH_WEIGHTS_KEY, GRAPH_STRIDE_KEY = "medfuse.weights_sha256", "medfuse.stride"


class Fuser(Protocol):
    """What fusion needs of a fuser; the network, the Laplacian baseline and test doubles all are one.

    ``fuse`` takes float32 arrays in [0, 1] of shape (H, W) or (N, H, W) (MRI grey, PET luminance) and
    returns the fused luminance, same shape, float32 in [0, 1]. Loaded once and reused.
    """

    @property
    def method(self) -> str:
        """The method's name, as ``--method`` and the run report give it."""
        ...

    @property
    def device(self) -> str:
        """Where it runs, as text ("cpu", "cuda:0")."""
        ...

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights file; ``None`` for a method without weights."""
        ...

    def fuse(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """Fused luminance of MRI grey and PET luminance slices."""
        ...


def bundled_weights_path(kind: InputKind = "uptake") -> Path:
    """The bundled weights of ``kind``: inside the installed package, else the repository's ``weights/``."""
    import medfuse

    name = BUNDLED[kind].weights_name
    package_dir = Path(medfuse.__file__).resolve().parent
    for folder in (package_dir / "_weights", package_dir.parent / "weights"):
        if (folder / name).is_file():
            return folder / name
    return package_dir / "_weights" / name


def _expected_sha256(path: Path, bundled: BundledNetwork | None) -> str | None:
    if bundled is not None:
        return bundled.weights_sha256
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    try:
        words = sidecar.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{sidecar}: the checksum file cannot be read; fix or delete it.") from exc
    if not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise WeightsError(f"{sidecar}: the checksum file holds no SHA-256 digest; fix or delete it.")
    return words[0].lower()


def _channels_from_state(state: dict[str, Any], path: Path) -> tuple[int, ...]:
    """The per-scale widths, read from the shapes of the MRI branch's first convolutions."""
    channels: list[int] = []
    while f"mri_branch.stages.{len(channels)}.0.0.weight" in state:
        channels.append(int(state[f"mri_branch.stages.{len(channels)}.0.0.weight"].shape[0]))
    if len(channels) < 3:
        raise WeightsError(f"{path}: not a medfuse FusionNet weights file (its tensors do not match the network).")
    return tuple(channels)


def _checked_bytes(path: Path, kind: str, expected: str | None, remedy: str) -> tuple[bytes, str]:
    """The bytes of ``path`` and their SHA-256, refused (:class:`WeightsError`) when unreadable or not ``expected``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: the {kind} cannot be read ({exc.strerror}).") from exc
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise WeightsError(
            f"{path}: SHA-256 mismatch (expected {expected[:12]}…, got {digest[:12]}…); the file is corrupt or "
            f"not the one intended, so {remedy}."
        )
    return data, digest


def load_model(weights: str | Path | None = None, kind: InputKind = "uptake") -> tuple[FusionNet, str]:
    """Build a FusionNet from a safetensors file (default: the bundled one of ``kind``) after checking its SHA-256.

    Returns the model in eval mode on the CPU and the file's SHA-256.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from medfuse.model import HEAD_MAPS, UNSHUFFLE, FusionNet

    bundled = BUNDLED[kind] if weights is None else None
    path = bundled_weights_path(kind) if weights is None else Path(weights)
    if bundled is not None and not path.is_file():
        raise WeightsError(f"{path}: the bundled weights are missing; reinstall medfuse or pass --weights FILE.")
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; check the --weights path.")
    data, digest = _checked_bytes(path, "weights file", _expected_sha256(path, bundled), "replace it")
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file (corrupt or truncated); replace it.") from exc
    model = FusionNet(_channels_from_state(state, path))
    head = state.get("head.weight")
    if head is not None and head.shape[0] == (HEAD_MAPS - 1) * UNSHUFFLE**2:
        raise WeightsError(
            f"{path}: weights of an earlier medfuse network, whose head gives three maps (this one gives four: "
            f"the MRI's, the PET's and their maximum's weights and an offset); retrain them with `medfuse train`."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{path}: not a medfuse FusionNet weights file (its tensors do not match the network)."
        ) from exc
    if not all(bool(t.isfinite().all()) for t in state.values()):
        raise WeightsError(f"{path}: the weights contain NaN or infinite values; replace the file.")
    return model.eval(), digest


def load_bundled_graph(kind: InputKind = "uptake") -> tuple[OnnxRunner, int] | None:
    """The bundled network of ``kind`` as an ONNX Runtime runner and its stride, without torch (``None``: no
    graph file).

    The graph's SHA-256 is checked like the weights', and its metadata must name the bundled weights.
    """
    from medfuse.runtime import OnnxRunner

    bundled = BUNDLED[kind]
    path = bundled_weights_path(kind).with_name(bundled.graph_name)
    if not path.is_file():
        return None
    data, _digest = _checked_bytes(path, "network graph", bundled.graph_sha256, "reinstall medfuse")
    runner = OnnxRunner(data)
    if runner.metadata.get(GRAPH_WEIGHTS_KEY) != bundled.weights_sha256:
        raise WeightsError(
            f"{path}: exported from other weights than {bundled.weights_name}; rebuild it with "
            "python -m medfuse.inference."
        )
    return runner, int(runner.metadata[GRAPH_STRIDE_KEY])


def export_bundled_graph(weights: Path, output: Path) -> str:
    """Write the ONNX graph of ``weights``' inference form to ``output`` (what ships as ``<name>.onnx``).

    Returns the graph's SHA-256, to pin in :data:`BUNDLED`.
    """
    from medfuse.runtime import export_onnx

    trained, digest = load_model(weights)
    metadata = {GRAPH_WEIGHTS_KEY: digest, GRAPH_STRIDE_KEY: str(trained.stride)}
    graph = export_onnx(trained.for_inference(), trained.stride, metadata)
    output.write_bytes(graph)
    return hashlib.sha256(graph).hexdigest()


class NetFuser:
    """The trained network behind the fuser interface (see docs/ARCHITECTURE.md); build once, reuse.

    ``weights`` None: the bundled network for PET input of ``kind``.
    """

    method = "net"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 16,
        backend: str | None = None,
        kind: InputKind = "uptake",
    ) -> None:
        from medfuse.runtime import CPU_BACKENDS, DEFAULT_CPU_BACKEND

        backend = backend or DEFAULT_CPU_BACKEND
        if backend not in CPU_BACKENDS:
            raise UsageError(f"backend {backend}: unknown; use {' or '.join(CPU_BACKENDS)}.")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: use a positive number of slices.")
        if threads is not None and threads < 1:
            raise UsageError(f"--threads {threads}: use a positive number of threads.")
        self.batch_size = batch_size
        self._pool: ThreadPoolExecutor | None = None
        self._cuda_model: torch.nn.Module | None = None
        self._device = "cpu"
        fallback = None
        if weights is None and backend == "onnxruntime" and not uses_cuda(device):
            try:
                bundled = load_bundled_graph(kind)
            except ImportError as exc:
                bundled, fallback = None, f"ONNX Runtime unavailable ({exc.name or exc} not installed)"
            if bundled is not None:
                self._runner: SliceRunner = bundled[0]
                self.stride = bundled[1]
                self.weights_sha256: str = BUNDLED[kind].weights_sha256
                self.backend = self._runner.name
                self.threads = threads or usable_cpus()
                return
        self._load_into_torch(weights, kind, device, threads, backend, fallback)

    def _load_into_torch(
        self,
        weights: str | Path | None,
        kind: InputKind,
        device: str,
        threads: int | None,
        backend: str,
        fallback: str | None,
    ) -> None:
        """Load the safetensors weights into PyTorch: on CUDA, or on the CPU as ``backend`` (exported to ONNX
        in memory for ONNX Runtime, unless ``fallback`` already says why not)."""
        import torch

        from medfuse.runtime import cpu_runner

        if threads is not None:
            torch.set_num_threads(threads)
        torch_device = resolve_device(device)
        trained, self.weights_sha256 = load_model(weights, kind)
        model = trained.for_inference()  # the same function in fewer operations
        self.threads = threads or torch.get_num_threads()
        self.stride = trained.stride
        if torch_device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            self._cuda_model = model.to(torch_device)
            self._device = str(torch_device)
            self.backend = "torch"
            return
        self._runner, export_fallback = cpu_runner(model, self.stride, "torch" if fallback else backend)
        self.backend = self._runner.name
        if fallback or export_fallback:
            warn(f"the network runs on PyTorch instead of {backend} (slower): {fallback or export_fallback}.")

    @property
    def device(self) -> str:
        """The device the network runs on, as text ("cpu", "cuda:0")."""
        return self._device

    def fuse(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """Fuse MRI grey and PET luminance, (H, W) or (N, H, W) float32 in [0, 1]; same shape out, in [0, 1]."""
        mri_array, pet_array = np.asarray(mri, dtype=np.float32), np.asarray(pet, dtype=np.float32)
        if mri_array.shape != pet_array.shape or mri_array.ndim not in (2, 3) or 0 in mri_array.shape:
            raise InvalidInputError(
                f"the MRI {mri_array.shape} and PET {pet_array.shape} slices must have the same non-empty "
                f"(H, W) or (N, H, W) shape; resample one onto the other first."
            )
        single = mri_array.ndim == 2
        mri_stack = np.clip(np.nan_to_num(mri_array[None] if single else mri_array), 0.0, 1.0)
        pet_stack = np.clip(np.nan_to_num(pet_array[None] if single else pet_array), 0.0, 1.0)
        fused = np.empty_like(mri_stack)
        for start in range(0, len(mri_stack), self.batch_size):
            stop = start + self.batch_size
            fused[start:stop] = self._fuse_batch(mri_stack[start:stop], pet_stack[start:stop])
        return fused[0] if single else fused

    def _padded(self, stack: np.ndarray) -> np.ndarray:
        """(N, H, W) -> (N, 1, H', W') with H', W' the next multiples of the stride (edge values repeated)."""
        height, width = stack.shape[1:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        padded = np.pad(stack, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        return np.ascontiguousarray(padded[:, None])

    def _fuse_batch(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        height, width = mri.shape[1:]
        mri_p, pet_p = self._padded(mri), self._padded(pet)
        if self._cuda_model is not None:
            import torch

            device = torch.device(self._device)
            with torch.inference_mode():
                out = self._cuda_model(torch.from_numpy(mri_p).to(device), torch.from_numpy(pet_p).to(device))
                return out.clamp_(0.0, 1.0)[:, 0, :height, :width].float().cpu().numpy()

        def one_slice(index: int) -> np.ndarray:
            out = self._runner(mri_p[index : index + 1], pet_p[index : index + 1])
            return np.clip(out[:height, :width], 0.0, 1.0)

        if self._pool is None:
            # Kept for the fuser's lifetime: fresh threads would redo the kernels' per-thread setup.
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="medfuse-net")
        return np.stack(list(self._pool.map(one_slice, range(len(mri)))))


def load_fuser(options: FuseOptions, kind: InputKind = "uptake") -> Fuser:
    """The fuser ``options`` name (method, weights, device, threads, batch size) for PET input of ``kind``,
    checked and loaded once."""
    return get_fuser(options.method, options.weights, options.device, options.threads, options.batch_size, kind)


def get_fuser(
    method: str = Method.NET,
    weights: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 16,
    kind: InputKind = "uptake",
) -> Fuser:
    """The fuser for ``--method``: the network (:class:`NetFuser`; bundled: the one for ``kind``) or the
    Laplacian baseline."""
    method = Method.parse(method)
    check_device(method, device)
    if method is Method.NET:
        return NetFuser(weights=weights, device=device, threads=threads, batch_size=batch_size, kind=kind)
    from medfuse.laplacian import LaplacianFuser

    return LaplacianFuser()


if __name__ == "__main__":  # python -m medfuse.inference: rebuild the bundled graphs after retraining
    for _kind, _bundled in BUNDLED.items():
        _weights = bundled_weights_path(_kind)
        _sha = export_bundled_graph(_weights, _weights.with_name(_bundled.graph_name))
        print(f"wrote {_weights.with_name(_bundled.graph_name)}; pin its graph_sha256 = {_sha!r}")
