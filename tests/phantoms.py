"""Body and limb phantoms for registration and DICOM tests and benchmarks (deterministic, in memory).

The anatomy is analytic, in one patient frame (LPS millimetres: +x towards the patient's left, +y
posterior, +z superior; x = 0 on the midline, y = 0 at the body's centre, z = 0 at the hip joints),
so any grid can sample it: a cropped thigh MRI, a pelvis crop, a whole-body PET. It holds:

============  ===========================================================================  ======  ======
tissue        where (sizes in mm)                                                           T1      FDG SUV
============  ===========================================================================  ======  ======
air           outside the body                                                              0       0
skin          outer 2 mm of the body                                                        620     0.9
fat           subcutaneous layer (8-22 mm), intermuscular septa (2 mm)                      1000    0.35
muscle        thigh and calf compartments, trunk wall and paraspinal muscles, neck           380     0.75
bone          femoral, vertebral and pelvic cortex (2.5-5 mm shells), skull                 40      0.5
marrow        fatty marrow of the femora (yellow)                                           900     0.8
red marrow    vertebral bodies, pelvic bones (haematopoietic)                               560     1.7
blood         femoral artery and vein (r 4-5 mm), aorta (r 12), heart chambers              150     1.8
tumour        soft-tissue sarcoma, ellipsoid 44 x 40 x 80 (default: right posterior thigh)  440     9.0
necrosis      the tumour's core (45 % of its radii)                                         250     1.8
lung          two ellipsoids 140 x 160 x 220 in the chest                                   30      0.45
liver         right upper abdomen, 220 x 170 x 160                                          520     2.3
spleen        left upper abdomen                                                            450     2.0
kidney        two, 60 x 50 x 110                                                            400     3.5
bladder       urine, 90 x 70 x 70 in the pelvis                                             120     25
viscera       bowel and mesentery filling the abdomen                                       420     1.3
heart         myocardium around the blood pool                                              450     4.0
grey / white  brain (head 150 x 190 x 220)                                                  500/700 8.5/3.0
csf           ventricles, spinal canal                                                      150     0.1
============  ===========================================================================  ======  ======

T1 values are arbitrary spin-echo units (fat brightest, muscle dark, cortical bone black, a sarcoma
nearly isointense to muscle as on real T1); FDG values are SUVbw (multiply by
:data:`BQ_ML_PER_SUV` for Bq/mL). The body spans z = -800 (mid-calf) to +920 (top of the head); the
thighs run from the hips (z 60) to the knees (z -430), 170 mm across at the top, tapering to 110 mm,
their fat thinning from 20 mm at the groin to 8 mm at the knee and their femoral vessels winding
from the front of the femur to behind it; each femur runs obliquely from (±80, -5, 55) to
(±62, 0, -420). Paired structures are mirror images except the tumour, which is what tells a left
thigh from a right one.

Images: :func:`body_mri` draws a T1 MRI on any :class:`~synthetic.Grid` (partial-volume blur, a
smooth receive-coil bias field, Rician noise); :func:`body_pet` draws an FDG PET moved by a known
rigid transform (MRI physical points to PET physical points, as in medfuse.registration), blurred to
the scanner's resolution (5 mm FWHM by default) with Poisson-like noise that is spatially
correlated over a voxel, as reconstructed PET noise is. :func:`multibed_positions` gives the slice
positions of a whole-body PET made of overlapping beds with one uneven junction, as real scanners
write them; ``tests/dicom_factory.py`` writes those as DICOM (``make_series(..., depths=...)``).

Registration cases (a :class:`Pair`: MRI, PET, the true transform, the tumour, ``tumour_error()``):
:func:`body_pair` crops one of :data:`REGIONS` (a thigh, both thighs, the pelvis, a tight thigh crop)
with a known offset of 3–6° and 6–12 mm, optionally "hard" (soft tissue of nearly equal uptake,
noisier PET, stronger coil shading, a 3 mm bend between the scans); :func:`wholebody_pair` puts the
thigh MRI of issue 10 (40 slices 5.2 mm apart, 0.39 mm → 1.56 mm in plane here) in a 267-slice
whole-body PET of another frame. ``benchmarks/bench_registration.py`` runs them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from synthetic import Grid, rigid

__all__ = [
    "BQ_ML_PER_SUV",
    "FDG_SUV",
    "REGIONS",
    "T1_INTENSITY",
    "TISSUES",
    "Bend",
    "Pair",
    "Tumour",
    "body_labels",
    "body_mri",
    "body_pair",
    "body_pet",
    "multibed_positions",
    "random_rigid",
    "rigid",
    "tumour_points",
    "wholebody_pair",
]

TISSUES = (
    "air",
    "skin",
    "fat",
    "muscle",
    "bone",
    "marrow",
    "red_marrow",
    "blood",
    "tumour",
    "necrosis",
    "lung",
    "liver",
    "spleen",
    "kidney",
    "bladder",
    "viscera",
    "heart",
    "grey",
    "white",
    "csf",
)
(
    AIR,
    SKIN,
    FAT,
    MUSCLE,
    BONE,
    MARROW,
    RED_MARROW,
    BLOOD,
    TUMOUR,
    NECROSIS,
    LUNG,
    LIVER,
    SPLEEN,
    KIDNEY,
    BLADDER,
    VISCERA,
    HEART,
    GREY,
    WHITE,
    CSF,
) = range(len(TISSUES))

#: T1-weighted intensities (arbitrary units), by tissue name.
T1_INTENSITY = {
    "air": 0.0, "skin": 620.0, "fat": 1000.0, "muscle": 380.0, "bone": 40.0, "marrow": 900.0,
    "red_marrow": 560.0, "blood": 150.0, "tumour": 440.0, "necrosis": 250.0, "lung": 30.0, "liver": 520.0,
    "spleen": 450.0, "kidney": 400.0, "bladder": 120.0, "viscera": 420.0, "heart": 450.0, "grey": 500.0,
    "white": 700.0, "csf": 150.0,
}  # fmt: skip
#: FDG uptake one hour after injection (SUVbw, g/mL), by tissue name.
FDG_SUV = {
    "air": 0.0, "skin": 0.9, "fat": 0.35, "muscle": 0.75, "bone": 0.5, "marrow": 0.8, "red_marrow": 1.7,
    "blood": 1.8, "tumour": 9.0, "necrosis": 1.8, "lung": 0.45, "liver": 2.3, "spleen": 2.0, "kidney": 3.5,
    "bladder": 25.0, "viscera": 1.3, "heart": 4.0, "grey": 8.5, "white": 3.0, "csf": 0.1,
}  # fmt: skip
#: Activity concentration of 1 SUV for 370 MBq injected into 75 kg (decay ignored).
BQ_ML_PER_SUV = 370e6 / 75e3


@dataclass(frozen=True)
class Tumour:
    """An ellipsoidal tumour with a necrotic core: centre (LPS mm, body frame), semi-axes (mm)."""

    centre: tuple[float, float, float] = (-100.0, 32.0, -240.0)
    radii: tuple[float, float, float] = (22.0, 20.0, 40.0)
    necrosis: float = 0.45

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point (..., 3) lies inside the tumour."""
        return _ellipsoid(points, self.centre, self.radii)


#: The default tumour: a sarcoma in the posterior compartment of the right thigh.
RIGHT_THIGH_SARCOMA = Tumour()


# ---- analytic shapes -------------------------------------------------------------------------------
def _ellipsoid(points: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    scaled = (points - np.asarray(centre, float)) / np.asarray(radii, float)
    return np.einsum("...i,...i->...", scaled, scaled) <= 1.0


@dataclass(frozen=True)
class Tube:
    """An elliptic cylinder along z whose centre and semi-axes vary linearly from ``z0`` to ``z1``.

    Limbs, the trunk, the femora, vessels and the spine are tubes; ``shrink`` makes the same tube
    thinner by that many mm (a fat layer is ``tube`` minus ``tube.shrunk(12)``).
    """

    z0: float
    z1: float
    centre0: tuple[float, float]
    centre1: tuple[float, float]
    axes0: tuple[float, float]
    axes1: tuple[float, float]

    def shrunk(self, mm: float) -> Tube:
        """The same tube with both semi-axes ``mm`` smaller."""
        smaller = (
            (max(self.axes0[0] - mm, 0.1), max(self.axes0[1] - mm, 0.1)),
            (max(self.axes1[0] - mm, 0.1), max(self.axes1[1] - mm, 0.1)),
        )
        return Tube(self.z0, self.z1, self.centre0, self.centre1, *smaller)

    def _frame(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        z = points[..., 2]
        t = np.clip((z - self.z0) / (self.z1 - self.z0), 0.0, 1.0)
        cx = self.centre0[0] + t * (self.centre1[0] - self.centre0[0])
        cy = self.centre0[1] + t * (self.centre1[1] - self.centre0[1])
        ax = self.axes0[0] + t * (self.axes1[0] - self.axes0[0])
        ay = self.axes0[1] + t * (self.axes1[1] - self.axes0[1])
        return points[..., 0] - cx, points[..., 1] - cy, ax, ay, z

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point (..., 3) lies inside the tube."""
        dx, dy, ax, ay, z = self._frame(points)
        low, high = sorted((self.z0, self.z1))
        return ((dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0) & (z >= low) & (z <= high)

    def ray(self, points: np.ndarray, angle_deg: float, half_width: float) -> np.ndarray:
        """Points within ``half_width`` mm of the half-plane leaving the tube's axis at ``angle_deg``."""
        dx, dy, _ax, _ay, z = self._frame(points)
        angle = math.radians(angle_deg)
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        low, high = sorted((self.z0, self.z1))
        return (along > 0) & (np.abs(across) <= half_width) & (z >= low) & (z <= high)

    @property
    def z_range(self) -> tuple[float, float]:
        return (min(self.z0, self.z1), max(self.z0, self.z1))


Painter = tuple[int, tuple[float, float], Callable[[np.ndarray], np.ndarray]]


def _limb(side: int, painters: list[Painter]) -> None:
    """One leg (``side`` +1: left, -1: right): thigh and calf, femur, septa, femoral vessels."""
    s = float(side)
    thigh = Tube(60.0, -430.0, (s * 92.0, 5.0), (s * 75.0, 10.0), (86.0, 80.0), (56.0, 56.0))
    calf = Tube(-430.0, -800.0, (s * 75.0, 10.0), (s * 70.0, 20.0), (56.0, 56.0), (40.0, 42.0))
    femur = Tube(55.0, -420.0, (s * 80.0, -5.0), (s * 62.0, 0.0), (14.0, 14.0), (15.0, 15.0))
    head = ((s * 85.0, -2.0, 15.0), (24.0, 24.0, 24.0))
    # subcutaneous fat thins from 20 mm at the groin to 8 mm at the knee, 9 mm on the calf
    thigh_muscle = Tube(60.0, -430.0, thigh.centre0, thigh.centre1, (64.0, 58.0), (46.0, 46.0))
    for limb, muscle in ((thigh, thigh_muscle), (calf, calf.shrunk(11.0))):
        painters.append((SKIN, limb.z_range, limb.contains))
        painters.append((FAT, limb.z_range, limb.shrunk(2.0).contains))
        painters.append((MUSCLE, limb.z_range, muscle.contains))
    inner = thigh.shrunk(16.0)
    for angle in (15.0, 160.0, 250.0):  # lateral, medial and posterior intermuscular septa (mirrored)
        mirrored = angle if side > 0 else 180.0 - angle

        def septum(points: np.ndarray, angle: float = mirrored) -> np.ndarray:
            return femur.ray(points, angle, 1.0) & inner.contains(points)

        painters.append((FAT, thigh.z_range, septum))
    # femoral artery and vein: anteromedial at the groin, behind the femur (popliteal) at the knee
    for groin, knee, radius in (((-22.0, -26.0), (-4.0, 26.0), 4.0), ((-28.0, -18.0), (4.0, 30.0), 5.0)):
        vessel = Tube(40.0, -400.0, (s * (80.0 + groin[0]), -5.0 + groin[1]), (s * (62.0 + knee[0]), knee[1]),
                      (radius, radius), (radius, radius))  # fmt: skip
        painters.append((BLOOD, vessel.z_range, vessel.contains))
    painters.append((BONE, femur.z_range, femur.contains))
    painters.append((MARROW, femur.z_range, femur.shrunk(5.0).contains))
    painters.append((BONE, (-10.0, 40.0), lambda p: _ellipsoid(p, *head)))
    painters.append((RED_MARROW, (-10.0, 40.0), lambda p: _ellipsoid(p, head[0], (21.0, 21.0, 21.0))))


def _painters(tumour: Tumour | None) -> list[Painter]:
    """Tissues in painting order (later ones overwrite earlier ones), each with its z range."""
    painters: list[Painter] = []
    trunk = Tube(-30.0, 640.0, (0.0, 0.0), (0.0, 5.0), (168.0, 112.0), (175.0, 105.0))
    neck = Tube(620.0, 740.0, (0.0, 15.0), (0.0, 15.0), (60.0, 58.0), (60.0, 58.0))
    head = ((0.0, 0.0, 820.0), (76.0, 96.0, 105.0))
    for side in (1, -1):
        _limb(side, painters)
    for tube, fat_mm, wall_mm in ((trunk, 20.0, 12.0), (neck, 8.0, 0.0)):
        painters.append((SKIN, tube.z_range, tube.contains))
        painters.append((FAT, tube.z_range, tube.shrunk(2.0).contains))
        painters.append((MUSCLE, tube.z_range, tube.shrunk(2.0 + fat_mm).contains))
        if wall_mm:
            painters.append((VISCERA, (20.0, 420.0), tube.shrunk(2.0 + fat_mm + wall_mm).contains))
    for side in (1.0, -1.0):
        paraspinal = Tube(0.0, 720.0, (side * 38.0, 80.0), (side * 35.0, 80.0), (30.0, 22.0), (26.0, 20.0))
        painters.append((MUSCLE, paraspinal.z_range, paraspinal.contains))
        pelvis = ((side * 115.0, 35.0, 110.0), (32.0, 62.0, 72.0))
        painters.append((BONE, (30.0, 190.0), lambda p, pelvis=pelvis: _ellipsoid(p, *pelvis)))
        painters.append((RED_MARROW, (30.0, 190.0), lambda p, c=pelvis[0]: _ellipsoid(p, c, (27.0, 57.0, 67.0))))
        kidney = ((side * 75.0, 55.0, 290.0), (30.0, 25.0, 55.0))
        painters.append((KIDNEY, (230.0, 350.0), lambda p, kidney=kidney: _ellipsoid(p, *kidney)))
        lung = ((side * 82.0, 10.0, 525.0), (70.0, 80.0, 110.0))
        painters.append((LUNG, (410.0, 640.0), lambda p, lung=lung: _ellipsoid(p, *lung)))
    spine = Tube(40.0, 760.0, (0.0, 62.0), (0.0, 55.0), (20.0, 18.0), (16.0, 15.0))
    canal = Tube(40.0, 760.0, (0.0, 88.0), (0.0, 80.0), (8.0, 8.0), (7.0, 7.0))
    painters.append((BONE, spine.z_range, spine.contains))
    painters.append((RED_MARROW, spine.z_range, spine.shrunk(3.0).contains))
    painters.append((CSF, canal.z_range, canal.contains))
    organs = (
        (BLADDER, (0.0, -40.0, 90.0), (45.0, 35.0, 35.0)),
        (LIVER, (-70.0, -5.0, 385.0), (110.0, 85.0, 80.0)),
        (SPLEEN, (95.0, 40.0, 395.0), (35.0, 30.0, 55.0)),
        (HEART, (20.0, -25.0, 470.0), (60.0, 50.0, 55.0)),
        (BLOOD, (20.0, -25.0, 470.0), (35.0, 28.0, 32.0)),
    )
    for label, centre, radii in organs:
        painters.append((label, (centre[2] - radii[2], centre[2] + radii[2]),
                         lambda p, c=centre, r=radii: _ellipsoid(p, c, r)))  # fmt: skip
    aorta = Tube(150.0, 520.0, (12.0, 38.0), (12.0, 30.0), (12.0, 12.0), (12.0, 12.0))
    painters.append((BLOOD, aorta.z_range, aorta.contains))
    # head: scalp (skin, fat), skull, grey and white matter, ventricles
    for label, fraction in ((SKIN, 1.0), (FAT, 0.97), (BONE, 0.93), (GREY, 0.87), (WHITE, 0.72)):
        radii = tuple(r * fraction for r in head[1])
        painters.append((label, (head[0][2] - radii[2], head[0][2] + radii[2]),
                         lambda p, r=radii: _ellipsoid(p, head[0], r)))  # fmt: skip
    for side, size in ((1.0, 1.0), (-1.0, 0.8)):
        ventricle = ((side * 10.0, 0.0, 830.0), (6.0 * size, 25.0 * size, 10.0 * size))
        painters.append((CSF, (800.0, 860.0), lambda p, v=ventricle: _ellipsoid(p, *v)))
    if tumour is not None:
        z_range = (tumour.centre[2] - tumour.radii[2], tumour.centre[2] + tumour.radii[2])
        core = tuple(r * tumour.necrosis for r in tumour.radii)
        painters.append((TUMOUR, z_range, tumour.contains))
        painters.append((NECROSIS, z_range, lambda p: _ellipsoid(p, tumour.centre, core)))
    return painters


def body_labels(points: np.ndarray, tumour: Tumour | None = RIGHT_THIGH_SARCOMA, chunk: int = 1 << 18) -> np.ndarray:
    """Tissue labels (indices into :data:`TISSUES`) at physical points (..., 3), body frame, LPS mm.

    Points are labelled in chunks; a tissue is only evaluated on chunks whose z range it reaches, so
    a cropped thigh costs little even though the whole body is defined.
    """
    painters = _painters(tumour)
    flat = np.asarray(points, float).reshape(-1, 3)
    labels = np.zeros(len(flat), np.uint8)
    for start in range(0, len(flat), chunk):
        block = flat[start : start + chunk]
        low, high = float(block[:, 2].min()), float(block[:, 2].max())
        out = labels[start : start + chunk]
        for label, (z0, z1), inside in painters:
            if z1 >= low and z0 <= high:
                out[inside(block)] = label
    return labels.reshape(np.shape(points)[:-1])


def _table(values: dict[str, float]) -> np.ndarray:
    return np.array([values[name] for name in TISSUES], np.float32)


# ---- images ----------------------------------------------------------------------------------------
def body_mri(
    grid: Grid,
    *,
    tumour: Tumour | None = RIGHT_THIGH_SARCOMA,
    bias: float = 0.15,
    noise: float = 0.02,
    seed: int = 0,
    dtype: type = np.float32,
) -> sitk.Image:
    """A T1-weighted MRI of the body on ``grid`` (body frame = MRI physical space).

    Tissue values of :data:`T1_INTENSITY`, blurred by half a voxel (partial volume), times a smooth
    bias field (``bias``: ±fraction across the field of view, brighter towards one corner as near a
    surface coil), plus Rician noise of ``noise`` × the fat intensity (air becomes a noise floor).
    """
    points = grid.points()
    values = _table(T1_INTENSITY)[body_labels(points, tumour)]
    image = sitk.SmoothingRecursiveGaussian(grid.image(values), [0.5 * s for s in grid.spacing])
    values = sitk.GetArrayFromImage(image)
    centre = points.reshape(-1, 3).mean(axis=0)
    extent = max(float(np.ptp(points.reshape(-1, 3), axis=0).max()), 1.0)
    towards = np.array([0.6, -0.5, 0.62])
    field = 1.0 + bias * ((points - centre) @ towards) / (extent / 2.0)
    rng = np.random.default_rng(seed)
    sigma = noise * T1_INTENSITY["fat"]
    real = values * field + rng.normal(0.0, sigma, values.shape)
    imaginary = rng.normal(0.0, sigma, values.shape)
    array = np.sqrt(real**2 + imaginary**2)
    if np.issubdtype(dtype, np.integer):
        array = np.round(array)
    return grid.image(array.astype(dtype))


def body_pet(
    grid: Grid,
    transform: sitk.Transform | None = None,
    *,
    tumour: Tumour | None = RIGHT_THIGH_SARCOMA,
    fwhm_mm: float = 5.0,
    noise: float = 0.15,
    seed: int = 1,
    supersample: int = 2,
    bq_ml: bool = False,
    uptake: dict[str, float] | None = None,
    bend: Bend | None = None,
) -> sitk.Image:
    """An FDG PET of the body on ``grid``, moved by ``transform`` (MRI points -> PET points).

    Uptake (:data:`FDG_SUV`, with ``uptake`` overriding some tissues) is drawn at ``supersample``³
    points per PET voxel (partial volume), at ``transform``⁻¹ of each PET point (and, with ``bend``,
    the body bent between the two scans), blurred to ``fwhm_mm``; noise is Poisson-like, standard
    deviation ``noise`` × √SUV (0.15: about 17 % in muscle, 5 % in the tumour), smoothed over one
    voxel as reconstructed noise is. Values are SUV, or Bq/mL when ``bq_ml``.
    """
    factor = max(int(supersample), 1)
    fine_spacing = tuple(s / factor for s in grid.spacing)
    fine_size = tuple(n * factor for n in grid.size)
    corner = np.asarray(grid.origin) - grid.direction @ (np.asarray(grid.spacing) / 2.0)
    fine_origin = corner + grid.direction @ (np.asarray(fine_spacing) / 2.0)
    fine = Grid(fine_size, fine_spacing, grid.direction, origin=tuple(fine_origin))  # type: ignore[arg-type]
    points = fine.points()
    if transform is not None:
        inverse = transform.GetInverse()
        matrix = np.array(inverse.GetMatrix()).reshape(3, 3) if hasattr(inverse, "GetMatrix") else None
        if matrix is not None:
            offset = np.array(inverse.TransformPoint((0.0, 0.0, 0.0)))
            points = points @ matrix.T + offset
        else:
            flat = [inverse.TransformPoint(tuple(p)) for p in points.reshape(-1, 3)]
            points = np.asarray(flat).reshape(points.shape)
    if bend is not None:
        points = points - bend.displacement(points)  # first-order inverse of a small smooth bend
    values = _table({**FDG_SUV, **(uptake or {})})[body_labels(points, tumour)]
    image = fine.image(values)
    if factor > 1:
        image = sitk.BinShrink(image, [factor] * 3)
        image.SetOrigin(tuple(float(v) for v in grid.origin))  # type: ignore[arg-type]
    sigma = fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma))
    rng = np.random.default_rng(seed)
    noisy = blurred + rng.normal(0.0, 1.0, blurred.shape).astype(np.float32) * noise * np.sqrt(
        np.clip(blurred, 0.0, None) + 0.02
    )
    correlated = sitk.SmoothingRecursiveGaussian(grid.image(noisy.astype(np.float32)), [0.5 * s for s in grid.spacing])
    values = np.clip(sitk.GetArrayFromImage(correlated), 0.0, None)
    if bq_ml:
        values = values * BQ_ML_PER_SUV
    return grid.image(values.astype(np.float32))


@dataclass(frozen=True)
class Bend:
    """A smooth bend of the body between the MRI and the PET scan (a leg lying differently): points
    move sideways by ``mm`` × ((z - ``centre_z``) / ``length``)², along ``towards`` (unit, LPS)."""

    mm: float = 3.0
    centre_z: float = 0.0
    length: float = 100.0
    towards: tuple[float, float, float] = (0.8, 0.6, 0.0)

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """How far each point (..., 3) of the MRI's body sits elsewhere in the PET's body."""
        along = ((points[..., 2] - self.centre_z) / self.length) ** 2
        return self.mm * along[..., None] * np.asarray(self.towards)


def tumour_points(tumour: Tumour = RIGHT_THIGH_SARCOMA, step_mm: float = 4.0) -> np.ndarray:
    """Points (N, 3) filling the tumour on a ``step_mm`` lattice (body frame = MRI physical space)."""
    axes = [np.arange(c - r, c + r + 1e-9, step_mm) for c, r in zip(tumour.centre, tumour.radii, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid[tumour.contains(grid)]


def multibed_positions(
    slices: int = 267,
    spacing_mm: float = 3.27,
    junctions: Sequence[tuple[int, float]] = ((133, 3.19),),
    start_mm: float = 0.0,
) -> np.ndarray:
    """Slice positions along the normal (mm) of a whole-body PET stitched from overlapping beds.

    Gaps are ``spacing_mm`` except at ``junctions`` (gap index, gap in mm): the default is the case
    reported from a real scanner, 267 slices 3.27 mm apart with one bed junction 3.19 mm apart.
    """
    gaps = np.full(slices - 1, spacing_mm)
    for index, gap in junctions:
        gaps[index] = gap
    return start_mm + np.concatenate([[0.0], np.cumsum(gaps)])


# ---- registration cases ------------------------------------------------------------------------------
@dataclass
class Pair:
    """An MRI and a PET of one body, and the truth: ``truth`` maps MRI points to PET points (the PET
    was drawn through it, and through ``bend`` if any), ``tumour`` is where the tumour is in the MRI."""

    name: str
    mri: sitk.Image
    pet: sitk.Image
    truth: sitk.Euler3DTransform
    tumour: Tumour
    bend: Bend | None = None

    def tumour_in_pet(self, points: np.ndarray) -> np.ndarray:
        """Where tumour points (MRI physical space) really are in the PET."""
        moved = points + self.bend.displacement(points) if self.bend is not None else points
        return np.array([self.truth.TransformPoint(tuple(float(v) for v in p)) for p in moved])

    def tumour_error(self, transform: sitk.Transform, step_mm: float = 3.0) -> float:
        """Mean distance (mm) over the tumour between where ``transform`` and the truth put it in the PET."""
        points = tumour_points(self.tumour, step_mm)
        found = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points])
        return float(np.mean(np.linalg.norm(found - self.tumour_in_pet(points), axis=1)))

    def header_error(self) -> float:
        """:meth:`tumour_error` of the header pose (the scanners' coordinates, no registration)."""
        return self.tumour_error(sitk.Euler3DTransform())


#: Body regions of the registration cases: MRI grid and PET grid (size, spacing mm, centre), tumour.
#: ``thigh``: a thigh MRI of 40 slices 5.2 mm apart (200 mm field of view, one leg and a bit of the
#: other) in a 224 mm PET crop; ``thighs``: both thighs cropped together; ``pelvis``: bladder, hips and
#: pelvic bones with a hot node; ``cropped-thigh``: a tight 144 mm crop that cuts the skin off.
REGIONS: dict[str, tuple[tuple[tuple[int, int, int], tuple[float, float, float], tuple[float, float, float]], ...]] = {
    "thigh": (((128, 128, 40), (1.5625, 1.5625, 5.2), (-85.0, 10.0, -240.0)),
              ((56, 56, 64), (4.0, 4.0, 4.0), (-80.0, 10.0, -235.0))),
    "thighs": (((160, 110, 44), (2.2, 2.2, 5.0), (0.0, 10.0, -200.0)),
               ((80, 56, 60), (4.7, 4.7, 3.27), (0.0, 10.0, -200.0))),
    "pelvis": (((150, 110, 50), (2.4, 2.4, 4.0), (0.0, 0.0, 80.0)),
               ((80, 60, 70), (4.7, 4.7, 3.27), (0.0, 0.0, 80.0))),
    "cropped-thigh": (((96, 96, 36), (1.5, 1.5, 5.0), (-90.0, 15.0, -250.0)),
                      ((40, 40, 50), (4.0, 4.0, 4.0), (-90.0, 15.0, -250.0))),
}  # fmt: skip
REGION_TUMOURS = {
    "pelvis": Tumour(centre=(60.0, -30.0, 60.0), radii=(18.0, 16.0, 20.0)),  # a hot iliac node
    "cropped-thigh": Tumour(centre=(-75.0, -20.0, -260.0), radii=(18.0, 18.0, 35.0)),  # anterior compartment
}
#: The "hard" variant: soft tissue of nearly equal uptake, noisier PET, stronger coil shading, a bend.
HARD_PET_UPTAKE = {"fat": 0.45, "muscle": 0.6}


def random_rigid(
    rng: np.random.Generator, degrees: tuple[float, float], mm: tuple[float, float], centre: Sequence[float]
) -> sitk.Euler3DTransform:
    """A rigid transform: a rotation of ``degrees`` (range) about a random axis through ``centre``, then a
    translation of ``mm`` (range) in a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    versor = sitk.VersorRigid3DTransform()
    versor.SetCenter(tuple(float(c) for c in centre))
    versor.SetRotation(tuple(float(a) for a in axis), float(np.deg2rad(rng.uniform(*degrees))))
    direction = rng.normal(size=3)
    versor.SetTranslation(tuple(float(t) for t in direction / np.linalg.norm(direction) * rng.uniform(*mm)))
    euler = sitk.Euler3DTransform()
    euler.SetCenter(versor.GetCenter())
    euler.SetMatrix(versor.GetMatrix())
    euler.SetTranslation(versor.GetTranslation())
    return euler


def body_pair(region: str, seed: int, *, hard: bool = False, shrink: int = 1, aligned: bool = False) -> Pair:
    """An MRI and PET crop of one body ``region`` (:data:`REGIONS`) misaligned by a known rigid offset
    of 3–6° (about an axis through a point within ~40 mm of the MRI's centre) and 6–12 mm, as the
    curated real pairs of issue 10 were (``aligned``: not misaligned, as an MRI resampled into the
    PET's frame). ``hard``: :data:`HARD_PET_UPTAKE`, PET noise 0.25, MRI shading ±25 %, the leg
    bent by 3 mm between the scans. ``shrink`` divides the MRI's matrix."""
    (mri_size, mri_spacing, mri_centre), (pet_size, pet_spacing, pet_centre) = REGIONS[region]
    tumour = REGION_TUMOURS.get(region, RIGHT_THIGH_SARCOMA)
    mri_grid = Grid(
        (mri_size[0] // shrink, mri_size[1] // shrink, mri_size[2]),
        (mri_spacing[0] * shrink, mri_spacing[1] * shrink, mri_spacing[2]),
        centre=mri_centre,
    )
    rng = np.random.default_rng(seed)
    truth = random_rigid(rng, (3.0, 6.0), (6.0, 12.0), np.asarray(mri_centre) + rng.normal(size=3) * 40.0)
    if aligned:
        truth = sitk.Euler3DTransform()
    bend = Bend(3.0, centre_z=mri_centre[2]) if hard else None
    mri = body_mri(mri_grid, tumour=tumour, seed=seed, bias=0.25 if hard else 0.15, noise=0.03 if hard else 0.02)
    pet = body_pet(
        Grid(pet_size, pet_spacing, centre=pet_centre),
        truth,
        tumour=tumour,
        seed=seed + 100,
        noise=0.25 if hard else 0.15,
        uptake=HARD_PET_UPTAKE if hard else None,
        bend=bend,
    )
    return Pair(f"{region}{' (hard)' if hard else ''} seed {seed}", mri, pet, truth, tumour, bend)


#: The thigh MRI of issue 10 (in the MRI scanner's frame) and the whole-body PET of overlapping beds.
THIGH_MRI = ((128, 128, 40), (1.5625, 1.5625, 5.2), (-85.0, 10.0, -240.0))
WHOLE_BODY_SLICES, WHOLE_BODY_SPACING_MM = 267, 3.27


def wholebody_pair(seed: int, *, pet_matrix: int = 128, mri_shrink: int = 1) -> Pair:
    """A thigh MRI and a whole-body PET (feet to chest, 873 mm: :data:`WHOLE_BODY_SLICES` slices) in
    different frames: the PET scanner's table puts the body 500–700 mm lower, 0–40 mm higher or
    lower and 0–20 mm sideways, rotated by 1–4°. The PET is drawn on a regular grid (600 mm across
    ``pet_matrix`` pixels); write it with :func:`multibed_positions` to get a bed junction."""
    size, spacing, centre = THIGH_MRI
    mri_grid = Grid(
        (size[0] // mri_shrink, size[1] // mri_shrink, size[2]),
        (spacing[0] * mri_shrink, spacing[1] * mri_shrink, spacing[2]),
        centre=centre,
    )
    rng = np.random.default_rng(seed)
    truth = random_rigid(rng, (1.0, 4.0), (5.0, 15.0), centre)
    table = (rng.uniform(-20.0, 20.0), rng.uniform(-40.0, 40.0), rng.uniform(-700.0, -500.0))
    truth.SetTranslation(tuple(float(v) for v in np.add(truth.GetTranslation(), table)))
    pet_centre = truth.TransformPoint((0.0, 0.0, 60.0))  # feet to chest around the hips
    pet_grid = Grid(
        (pet_matrix, pet_matrix, WHOLE_BODY_SLICES),
        (600.0 / pet_matrix, 600.0 / pet_matrix, WHOLE_BODY_SPACING_MM),
        centre=pet_centre,
    )
    mri = body_mri(mri_grid, seed=seed)
    pet = body_pet(pet_grid, truth, seed=seed + 100, supersample=1)
    return Pair(f"thigh MRI in whole-body PET seed {seed}", mri, pet, truth, RIGHT_THIGH_SARCOMA)
