"""Visual quality control: one self-contained HTML page per case and an index page per batch.

* :mod:`medfuse.qc.case`: what a case page is drawn from (:class:`CaseVolumes`), the drawing
  (:func:`prepare_case_page`) and the rebuild of a finished case's page (:func:`rebuild_case_page`).
* :mod:`medfuse.qc.volumes`: the QC grid (coarse, patient-aligned, isotropic) and the viewer's volumes.
* :mod:`medfuse.qc.images`: the pictures, drawn by :mod:`medfuse.preview`.
* :mod:`medfuse.qc.page`: the HTML (Jinja2 templates in ``templates/``, styles and the viewer script
  in ``assets/``, inlined into every page).
* :mod:`medfuse.qc.index`: the batch index.

Nothing heavy is imported here: SimpleITK, scipy and Jinja2 load inside the functions.
"""

from medfuse.qc.case import CaseVolumes, case_title, prepare_case_page, rebuild_case_page
from medfuse.qc.page import CasePage

__all__ = ["CasePage", "CaseVolumes", "case_title", "prepare_case_page", "rebuild_case_page"]
