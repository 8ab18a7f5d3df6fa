"""Transforms on disk and in reports: ITK transform files, 4x4 matrices, rotation angles."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.errors import InvalidInputError, UnreadableInputError

if TYPE_CHECKING:
    import SimpleITK as sitk


def single(transform: sitk.Transform) -> sitk.Transform:
    """The concrete transform (Euler3D, Affine...) inside what SimpleITK returns."""
    import SimpleITK as sitk

    transform = transform.Downcast()
    while isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0).Downcast()
    return transform


def read_transform(path: str | Path) -> sitk.Transform:
    """Read an ITK transform file (.tfm/.txt/.h5) that maps MRI points to PET points."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"{path}: the --transform file does not exist; check the path.")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise UnreadableInputError(
            f"{path}: the --transform file is not a readable ITK transform; give a .tfm written by "
            "--save-transform (or by ITK/SimpleITK)."
        ) from exc
    if transform.GetDimension() != 3:
        raise InvalidInputError(f"{path}: the --transform is {transform.GetDimension()}-D; a 3-D transform is needed.")
    return single(transform)


def write_transform(transform: sitk.Transform, path: str | Path) -> None:
    """Write ``transform`` as an ITK text transform (``sitk.ReadTransform`` gives it back)."""
    import SimpleITK as sitk

    sitk.WriteTransform(transform, str(path))


def transform_matrix(transform: sitk.Transform) -> np.ndarray | None:
    """The 4x4 homogeneous matrix of a linear transform (MRI mm -> PET mm), or None if non-linear."""
    probe = np.vstack([np.zeros(3), np.eye(3)])
    mapped = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in probe])
    offset = mapped[0]
    matrix = (mapped[1:] - offset).T
    check = np.array([10.0, -20.0, 30.0])
    if not np.allclose(matrix @ check + offset, transform.TransformPoint(tuple(check)), atol=1e-6):
        return None
    homogeneous = np.eye(4)
    homogeneous[:3, :3] = matrix
    homogeneous[:3, 3] = offset
    return homogeneous


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """The rotation angle (degrees) of the rotation closest to a 3x3 matrix (polar decomposition)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float)[:3, :3])
    rotation = u @ vt
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def describe_transform(transform: sitk.Transform) -> dict[str, Any]:
    """Type, ITK parameters and (when linear) the 4x4 matrix of a transform, JSON-ready."""
    described: dict[str, Any] = {
        "type": transform.GetName(),
        "maps": "MRI physical points (LPS mm) to PET physical points",
        "parameters": [float(p) for p in transform.GetParameters()],
        "fixed_parameters": [float(p) for p in transform.GetFixedParameters()],
    }
    matrix = transform_matrix(transform)
    if matrix is not None:
        described["matrix"] = matrix.round(9).tolist()
        rotation = matrix[:3, :3]
        if np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
            described["rotation_deg"] = round(rotation_angle_deg(rotation), 4)
        described["translation_mm"] = matrix[:3, 3].round(4).tolist()
    return described
