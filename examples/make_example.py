"""Make the example MRI + FDG-PET pair in examples/ from the MNI152 template shipped with nilearn.

Run ``python examples/make_example.py`` (needs ``pip install -e ".[examples]"``, i.e. nilearn; no
download: nilearn ships the 2009 MNI152 T1, grey- and white-matter maps as local files). The output
is the same on every run (fixed seed):

* ``mri.nii.gz``  T1-weighted head, 1.5 mm isotropic, stored RAS like most NIfTI files (int16). The
  template is skull-stripped, so a simple scalp, skull and CSF shell is grown around the brain.
* ``pet.nii.gz``  simulated FDG PET in Bq/mL, 2.5 × 2.5 × 3.0 mm voxels, stored LPS (another voxel
  order than the MRI), a smaller axial field of view, moved by a known rigid transform: uptake grey
  matter 12 000, white matter 3 500 (3.4×), CSF 0, scalp 700; two hypermetabolic lesions; 6 mm FWHM
  blur; Poisson-like Gaussian noise.
* ``truth.json``  the rigid misalignment (MRI physical point -> PET physical point, ITK Euler3D
  parameters and 4x4 matrix, LPS mm) and the lesion centres in both images, so a registration can
  be checked against the truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

HERE = Path(__file__).resolve().parent
SEED = 20240613
MRI_SPACING_MM = 1.5
PET_SPACING_MM = (2.5, 2.5, 3.0)
PET_SIZE = (120, 120, 55)  # 300 x 300 mm in-plane, 165 mm axial
PET_FWHM_MM = 6.0
UPTAKE_BQ_ML = {"grey": 12000.0, "white": 3500.0, "csf": 0.0, "skull": 200.0, "scalp": 700.0}
#: Lesions in MNI space (RAS mm, as atlases give them): centre, radius, uptake.
LESIONS = (
    {"name": "right frontal", "centre_ras_mm": (34.0, 30.0, 28.0), "radius_mm": 7.0, "uptake_bq_ml": 30000.0},
    {"name": "left temporo-parietal", "centre_ras_mm": (-48.0, -32.0, 12.0), "radius_mm": 5.0, "uptake_bq_ml": 26000.0},
)
#: The known misalignment: PET physical point = R (x - centre) + centre + translation.
ROTATION_DEG = (4.0, -3.0, 7.0)
TRANSLATION_MM = (9.0, -6.0, 12.0)
#: Where the PET field of view is centred, relative to the (moved) brain centre, mm.
PET_FOV_SHIFT_MM = (4.0, -8.0, 12.0)


def to_sitk(nifti: object) -> sitk.Image:
    """A nibabel image (RAS affine) as a SimpleITK image (LPS physical space), float32."""
    data = np.asarray(nifti.dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nifti.affine  # type: ignore[attr-defined]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in (affine[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
    return image


def like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A (z, y, x) array as an image on ``reference``'s grid."""
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    return image


def ras_to_lps(point: tuple[float, ...]) -> list[float]:
    """Flip the first two axes: MNI/RAS mm to ITK/LPS mm."""
    return [-float(point[0]), -float(point[1]), float(point[2])]


def tissue_maps() -> tuple[sitk.Image, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1 mm template grid, T1 (0..1), grey and white matter maps, and distance outside the brain (mm)."""
    from nilearn import datasets

    t1 = to_sitk(datasets.load_mni152_template(resolution=1))
    grey = sitk.GetArrayFromImage(to_sitk(datasets.load_mni152_gm_template(resolution=1)))
    white = sitk.GetArrayFromImage(to_sitk(datasets.load_mni152_wm_template(resolution=1)))
    t1_values = sitk.GetArrayFromImage(t1)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1_values > 0.15, iterations=2))
    outside_mm = ndimage.distance_transform_edt(~brain)  # 1 mm voxels
    return t1, t1_values, grey, white, outside_mm


def lesion_weights(reference: sitk.Image) -> list[np.ndarray]:
    """Soft-edged spheres (1 inside, 0 outside, 1 mm ramp) of each lesion on ``reference``'s grid."""
    size = reference.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size[::-1]), indexing="ij")
    direction = np.array(reference.GetDirection()).reshape(3, 3) * np.array(reference.GetSpacing())
    weights = []
    for lesion in LESIONS:
        centre_index = np.linalg.solve(direction, np.array(ras_to_lps(lesion["centre_ras_mm"])) - reference.GetOrigin())
        offsets = np.stack([i - centre_index[0], j - centre_index[1], k - centre_index[2]], axis=-1) @ direction.T
        distance = np.sqrt(np.einsum("...i,...i->...", offsets, offsets))
        weights.append(np.clip(lesion["radius_mm"] + 0.5 - distance, 0.0, 1.0))
    return weights


def make_mri(t1: sitk.Image, t1_values: np.ndarray, outside_mm: np.ndarray, rng: np.random.Generator) -> sitk.Image:
    """T1 head on a ``MRI_SPACING_MM`` grid (RAS storage), int16, with scalp/skull/CSF shells and noise."""
    head = t1_values.copy()
    head[(outside_mm > 0) & (outside_mm <= 3)] = 0.12  # CSF
    head[(outside_mm > 3) & (outside_mm <= 9)] = 0.04  # skull
    head[(outside_mm > 9) & (outside_mm <= 15)] = 0.75  # scalp fat
    fine = sitk.SmoothingRecursiveGaussian(like(head, t1), 0.6)
    extent = np.array(t1.GetSize()) * np.array(t1.GetSpacing())
    size = [round(e / MRI_SPACING_MM) for e in extent]
    direction = np.array(t1.GetDirection()).reshape(3, 3)
    corner = np.array(t1.GetOrigin()) - direction @ (np.array(t1.GetSpacing()) / 2)
    origin = corner + direction @ np.full(3, MRI_SPACING_MM / 2)
    smoothed = sitk.SmoothingRecursiveGaussian(fine, 0.55)
    mri = sitk.Resample(
        smoothed, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), (MRI_SPACING_MM,) * 3, t1.GetDirection()
    )
    values = sitk.GetArrayFromImage(mri) * 1000.0
    values += rng.normal(0.0, 12.0, values.shape)
    out = sitk.GetImageFromArray(np.clip(np.round(values), 0, 32767).astype(np.int16))
    out.CopyInformation(mri)
    return out


def misalignment(centre: np.ndarray) -> sitk.Euler3DTransform:
    """The known rigid transform, MRI physical points -> PET physical points (LPS mm)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre))
    transform.SetRotation(*(float(a) for a in np.deg2rad(ROTATION_DEG)))
    transform.SetTranslation(TRANSLATION_MM)
    return transform


def make_pet(
    t1: sitk.Image,
    grey: np.ndarray,
    white: np.ndarray,
    outside_mm: np.ndarray,
    transform: sitk.Euler3DTransform,
    rng: np.random.Generator,
) -> sitk.Image:
    """FDG uptake (Bq/mL) drawn on the template, blurred, moved by ``transform``, on an LPS PET grid."""
    uptake = UPTAKE_BQ_ML["grey"] * grey + UPTAKE_BQ_ML["white"] * white
    uptake[(outside_mm > 3) & (outside_mm <= 9)] = UPTAKE_BQ_ML["skull"]
    uptake[(outside_mm > 9) & (outside_mm <= 15)] = UPTAKE_BQ_ML["scalp"]
    for lesion, weight in zip(LESIONS, lesion_weights(t1), strict=True):
        uptake = uptake * (1.0 - weight) + lesion["uptake_bq_ml"] * weight
    blurred = sitk.SmoothingRecursiveGaussian(like(uptake, t1), PET_FWHM_MM / (2.0 * np.sqrt(2.0 * np.log(2.0))))
    fov_centre = np.array(transform.TransformPoint(transform.GetCenter())) + np.array(PET_FOV_SHIFT_MM)
    origin = fov_centre - (np.array(PET_SIZE) - 1) * np.array(PET_SPACING_MM) / 2.0  # identity direction = LPS
    pet = sitk.Resample(
        blurred,
        PET_SIZE,
        transform.GetInverse(),
        sitk.sitkLinear,
        tuple(origin),
        PET_SPACING_MM,
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        0.0,
        sitk.sitkFloat32,
    )
    values = np.clip(sitk.GetArrayFromImage(pet), 0.0, None)
    noisy = values + rng.normal(0.0, 1.0, values.shape) * 0.05 * np.sqrt(values * UPTAKE_BQ_ML["grey"])
    out = sitk.GetImageFromArray(np.clip(noisy, 0.0, None).astype(np.float32))
    out.CopyInformation(pet)
    return out


def truth_record(transform: sitk.Euler3DTransform, mri: sitk.Image, pet: sitk.Image) -> dict[str, object]:
    """What a registration should find, and where the lesions are, JSON-ready."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(transform.GetMatrix()).reshape(3, 3)
    matrix[:3, 3] = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    lesions = []
    for lesion in LESIONS:
        mri_point = ras_to_lps(lesion["centre_ras_mm"])
        pet_point = transform.TransformPoint(tuple(mri_point))
        lesions.append(
            {
                "name": lesion["name"],
                "radius_mm": lesion["radius_mm"],
                "uptake_bq_ml": lesion["uptake_bq_ml"],
                "mni_ras_mm": list(lesion["centre_ras_mm"]),
                "mri_lps_mm": mri_point,
                "pet_lps_mm": [round(v, 4) for v in pet_point],
                "mri_voxel": [round(v, 2) for v in mri.TransformPhysicalPointToContinuousIndex(tuple(mri_point))],
                "pet_voxel": [round(v, 2) for v in pet.TransformPhysicalPointToContinuousIndex(pet_point)],
            }
        )
    return {
        "description": "Known misalignment of pet.nii.gz relative to mri.nii.gz (made by make_example.py).",
        "transform": {
            "maps": "MRI physical point (LPS mm) -> PET physical point (LPS mm), as --save-transform writes it",
            "type": "Euler3DTransform",
            "rotation_deg_xyz": list(ROTATION_DEG),
            "translation_mm": list(TRANSLATION_MM),
            "centre_mm": [round(c, 4) for c in transform.GetCenter()],
            "itk_parameters": list(transform.GetParameters()),
            "itk_fixed_parameters": list(transform.GetFixedParameters()),
            "matrix": matrix.round(9).tolist(),
        },
        "lesions": lesions,
        "pet": {
            "units": "Bq/mL",
            "spacing_mm": list(PET_SPACING_MM),
            "size": list(PET_SIZE),
            "fwhm_mm": PET_FWHM_MM,
            "uptake_bq_ml": UPTAKE_BQ_ML,
        },
        "mri": {"spacing_mm": [MRI_SPACING_MM] * 3, "size": list(mri.GetSize())},
        "source": "nilearn MNI152 2009 template (T1, GM, WM maps), seed " + str(SEED),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where to write (default: examples/)")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    t1, t1_values, grey, white, outside_mm = tissue_maps()
    brain_centre = np.array(
        t1.TransformContinuousIndexToPhysicalPoint(tuple(ndimage.center_of_mass(grey + white)[::-1]))
    )
    transform = misalignment(brain_centre)
    mri = make_mri(t1, t1_values, outside_mm, rng)
    pet = make_pet(t1, grey, white, outside_mm, transform, rng)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mri, str(args.output_dir / "mri.nii.gz"))
    sitk.WriteImage(pet, str(args.output_dir / "pet.nii.gz"))
    record = truth_record(transform, mri, pet)
    (args.output_dir / "truth.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for name in ("mri.nii.gz", "pet.nii.gz", "truth.json"):
        print(f"wrote {args.output_dir / name} ({(args.output_dir / name).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
