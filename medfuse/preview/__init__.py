"""PNG previews of volumes: one slice, a mosaic of slices, three orthogonal planes, or projections.

A preview is a quick look that must not lie about anatomy, so:

- **Orientation** comes from the direction matrix: each image axis is matched to the closest patient
  axis (LPS, as ITK and DICOM use), and the planes are laid out in the **radiological convention** by
  default (patient's right on the viewer's left, anterior up on axial, superior up on coronal and
  sagittal, anterior on the left of sagittal), as clinical PACS viewers do. ``convention="neurological"``
  puts the patient's right on the right (as nilearn/FSLeyes do). Tri-planar and MIP views print the
  orientation letters derived from the direction vectors at each edge.
- **Aspect**: every panel is resampled to square millimetres, so anisotropic voxels look right.
- ``--slice N`` counts along the image axis shown as axial, in the file's own index order (the
  numbers printed on the mosaic tiles); ``--at X Y Z`` is a physical point in millimetres in ITK/DICOM
  LPS patient coordinates (negate X and Y to give RAS/MNI coordinates).

Modules: :mod:`~medfuse.preview.layout` (display order, orientation letters),
:mod:`~medfuse.preview.render` (arrays in, picture out: windows, overlay, views),
:mod:`~medfuse.preview.draw` (scaling, text, grids, colour bar, PNG) and
:mod:`~medfuse.preview.command` (files in, PNG out).
"""

from medfuse.intensity import robust_window
from medfuse.preview.command import preview_file, unit_label
from medfuse.preview.draw import write_png
from medfuse.preview.layout import CONVENTIONS, Convention, orientation_letters
from medfuse.preview.render import HOT_SLICE_FRACTION, MODES, MOSAIC_TILES, mosaic_slices, render_preview

__all__ = [
    "CONVENTIONS",
    "HOT_SLICE_FRACTION",
    "MODES",
    "MOSAIC_TILES",
    "Convention",
    "mosaic_slices",
    "orientation_letters",
    "preview_file",
    "render_preview",
    "robust_window",
    "unit_label",
    "write_png",
]
