"""QC case pages without a browser: self-contained HTML, exact viewer geometry and values, degradation."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from qc_factory import HOSTILE, Case, bare_report, full_report, lesion_mri_voxel, make_case, write_case_folder
from synthetic import ORIENTATIONS, oblique_direction

from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError
from medfuse.qc import CaseVolumes, prepare_case_page, rebuild_case_page
from medfuse.qc.page import CONTENT_SECURITY_POLICY
from medfuse.qc.volumes import MAX_VOXELS, decode_array, qc_grid


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("qc-inputs"))


@pytest.fixture(scope="module")
def full_html(case: Case) -> str:
    report = full_report(case.report)
    return prepare_case_page(case.volumes, report, "case-01").html(report)


class _Resources(HTMLParser):
    """Collects the tags, the attributes that load something, and the scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[tuple[str, str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.policy: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "srcset", "data") and value is not None:
                self.loads.append((tag, name, value))
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "meta" and dict(attrs).get("http-equiv") == "Content-Security-Policy":
            self.policy = dict(attrs).get("content")


def _viewer_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_the_case_page_is_one_self_contained_file(full_html: str) -> None:
    parser = _Resources()
    parser.feed(full_html)
    assert parser.policy == CONTENT_SECURITY_POLICY and "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "link" not in parser.tags and "iframe" not in parser.tags
    for tag, name, value in parser.loads:
        assert value.startswith("data:image/") if name == "src" else value.startswith("#"), (tag, name, value[:60])
    assert not re.search(r"https?://", full_html.replace("http-equiv", "")), "the page names a network address"
    assert all(script.get("src") is None for script in parser.scripts)
    images = [value for tag, name, value in parser.loads if tag == "img"]
    assert len(images) == 7  # two inputs, two registration checks, fused planes, colour bar, mosaic


def test_the_report_figures_are_shown_and_hostile_text_is_escaped(full_html: str) -> None:
    text = re.sub(r"\s+", " ", full_html)
    for expected in (
        "12.3 mm",  # moved
        "8.76 °",  # rotation
        "-0.4123",  # metric at the header pose
        "-0.7524",  # after registration
        "97 %",  # overlap
        "medium (spread 1.8 mm)",
        "21.37 SUVbw (g/mL)",  # SUVmax
        "18.02 SUVbw (g/mL)",  # SUVpeak
        "SUVmax",
        "3.05",  # region volume
        "12 NaN voxels were set to 0.",
        "Weights SHA-256",
    ):
        assert expected in text, expected
    assert HOSTILE not in full_html and "&lt;script&gt;alert(" in full_html
    # the viewer's JSON may not close its script element early
    assert full_html.count("</script>") == full_html.count("<script")
    voxel = ",".join(str(v) for v in lesion_mri_voxel())
    assert f'data-voxel="{voxel}"' in full_html  # the hottest region can be shown in the viewer
    assert full_html.count('class="goto"') == 3  # max, peak, region 1 (region 2 lies outside the MRI)


def test_a_bare_report_says_what_is_not_available(case: Case) -> None:
    report = bare_report(case.report)
    html = prepare_case_page(case.volumes, report, "old-case").html(report)
    assert "Hotspots not available" in html
    assert "Warnings not available" in html
    assert html.count("not available") >= 8
    assert "Metric header → result" in html
    assert "report has no hotspot measurements." in html
    skipped = {**full_report(case.report), "hotspots": None, "hotspots_skipped": "skipped: it needs up to 9 GB"}
    html = prepare_case_page(case.volumes, skipped, "skipped").html(skipped)
    assert "Hotspots not available: skipped: it needs up to 9 GB." in html


@pytest.mark.parametrize(("gamma", "shown"), [(0.74, "to the power 0.74"), (1.0, None), (None, None), ("x", None)])
def test_the_pet_lift_is_stated_when_the_network_got_a_lifted_pet(case: Case, gamma: Any, shown: str | None) -> None:
    report = full_report(case.report)
    report["pet_window"]["gamma"] = gamma
    text = re.sub(r"\s+", " ", prepare_case_page(case.volumes, report, "lift").html(report))
    assert ("Most of the PET's body lay low in that window" in text) is (shown is not None)
    assert shown is None or shown in text


def test_viewer_volumes_hold_the_registered_pet_on_an_exact_grid(case: Case, full_html: str) -> None:
    data = _viewer_data(full_html)
    grid = qc_grid(case.volumes.mri)
    assert data["shape"] == list(grid.shape) and not grid.downsampled
    matrix = np.array(data["index_to_lps"])
    for index in ((0, 0, 0), (5, 17, 33), tuple(n - 1 for n in grid.reference.GetSize())):
        expected = grid.reference.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(matrix @ [*index, 1], [*expected, 1], atol=1e-5)
    # isotropic, patient-aligned MRI stored RAS: the QC grid's voxel centres are the MRI's, axes flipped
    mri = case.volumes.mri
    for index in ((0, 0, 0), (7, 11, 13)):
        flipped = (mri.GetSize()[0] - 1 - index[0], mri.GetSize()[1] - 1 - index[1], index[2])
        np.testing.assert_allclose(
            grid.reference.TransformIndexToPhysicalPoint(index), mri.TransformIndexToPhysicalPoint(flipped), atol=1e-6
        )
    mri_index = np.array(data["mri_lps_to_index"]) @ (matrix @ [7, 11, 13, 1])
    np.testing.assert_allclose(mri_index[:3], [mri.GetSize()[0] - 1 - 7, mri.GetSize()[1] - 1 - 11, 13], atol=1e-6)
    pet = data["pet_offset"] + data["pet_scale"] * decode_array(data["pet"], "uint16", tuple(data["shape"]))
    expected = grid.resample(case.volumes.pet, case.volumes.transform)
    assert np.abs(pet - expected).max() <= data["pet_scale"] / 2 + 1e-4
    base = decode_array(data["base"], "uint8", tuple(data["shape"]))
    assert base.max() == 255 and base.min() == 0
    x, y, z = data["start"]  # the crosshair starts on the hottest point of the report: the lesion
    lesion = mri.TransformIndexToPhysicalPoint(lesion_mri_voxel())
    np.testing.assert_allclose(matrix @ [x, y, z, 1], [*lesion, 1], atol=grid.spacing_mm)


@pytest.mark.parametrize("direction", ["RAS", "oblique"])
def test_the_qc_grid_covers_any_mri_box_with_isotropic_patient_aligned_voxels(direction: str) -> None:
    axes = ORIENTATIONS["RAS"] if direction == "RAS" else oblique_direction()
    mri = sitk.Image([256, 256, 180], sitk.sitkUInt8)
    mri.SetSpacing((0.9, 0.9, 1.2))
    mri.SetDirection(tuple(axes.ravel()))
    grid = qc_grid(mri)
    assert np.prod(grid.reference.GetSize()) <= MAX_VOXELS * 1.02 and grid.downsampled
    assert len(set(grid.reference.GetSpacing())) == 1
    direction_matrix = np.array(grid.reference.GetDirection()).reshape(3, 3)
    assert np.all(np.diag(direction_matrix) > 0.7)  # axes point to L, P and S
    corners = [(0, 0, 0), (255, 255, 179), (255, 0, 179), (0, 255, 0)]
    for corner in corners:  # every MRI voxel centre lies inside the grid's box
        point = mri.TransformIndexToPhysicalPoint(corner)
        index = grid.reference.TransformPhysicalPointToContinuousIndex(point)
        assert all(-0.5 <= i <= n - 0.5 for i, n in zip(index, grid.reference.GetSize(), strict=True))


def test_header_pose_and_registered_pictures_differ_only_when_registration_moved_the_pet(case: Case) -> None:
    report = full_report(case.report)
    moved = prepare_case_page(case.volumes, report, "moved").pictures
    assert moved["registration_header"] != moved["registration_result"]
    aligned_pet = sitk.Resample(case.volumes.pet, case.volumes.mri, case.volumes.transform, sitk.sitkLinear, 0.0)
    aligned = dataclasses.replace(case.volumes, pet=aligned_pet, pet_on_mri=aligned_pet, transform=sitk.Transform())
    still = prepare_case_page(aligned, report, "still").pictures
    assert still["registration_header"] == still["registration_result"]


def test_a_case_with_only_the_fused_outputs_still_gets_a_page(case: Case) -> None:
    volumes = CaseVolumes(fused=case.volumes.fused, overlay=case.volumes.overlay, notes=["The MRI input is gone."])
    report = bare_report(case.report)
    page = prepare_case_page(volumes, report, "outputs-only")
    html = page.html(report)
    assert set(page.pictures) == {"fused_mosaic", "fused_planes", "colour_bar"}
    assert "The MRI input is gone." in html and "use the fused luminance" in html
    assert page.viewer is not None and page.viewer["pet"] is None and page.viewer["base_name"] == "fused luminance"
    nothing = prepare_case_page(CaseVolumes(), report, "empty")
    assert nothing.viewer is None and not nothing.pictures
    assert "Viewer not available" in nothing.html(report)


def test_a_downsampled_viewer_says_so(case: Case) -> None:
    report = full_report(case.report)
    page = prepare_case_page(case.volumes, report, "coarse")
    assert page.viewer is not None and "note" not in page.viewer
    small = prepare_case_page(case.volumes, report, "coarse", max_voxels=20**3)
    assert small.viewer is not None and "resampled from the MRI's 60×72×64 voxels" in small.viewer["note"]
    assert np.prod(small.viewer["shape"]) <= 20**3 * 1.1


# ---- medfuse report CASE_DIR -------------------------------------------------------------------------
def test_rebuild_from_a_finished_case_folder(case: Case, tmp_path: Path) -> None:
    folder = write_case_folder(case, tmp_path / "case-07", full_report(case.report))
    page = rebuild_case_page(folder)
    assert page == folder / "qc.html"
    html = page.read_text(encoding="utf-8")
    assert "medfuse QC: case-07" in html and "Notes on this page" not in html
    assert html.count("<img ") == 7 and '"pet": "' in html


def test_rebuild_degrades_with_notes_when_inputs_and_the_registered_pet_are_gone(case: Case, tmp_path: Path) -> None:
    report = full_report(case.report)
    report["inputs"]["mri"]["path"] = str(tmp_path / "moved-away" / "mri.nii.gz")
    report["inputs"]["pet"]["path"] = str(tmp_path / "moved-away" / "pet.nii.gz")
    folder = write_case_folder(case, tmp_path / "case-08", report, pet_on_mri=False)
    with pytest.warns(MedfuseWarning) as caught:
        page = rebuild_case_page(folder)
    assert any("no longer exists" in str(w.message) for w in caught)
    html = page.read_text(encoding="utf-8")
    assert "The MRI input" in html and "no longer exists" in html
    assert "pet_on_mri.nii.gz, --save-pet) is not there" in html
    assert "MRI picture not available" in html and "Header-pose picture not available" in html
    assert _viewer_data(html)["pet"] is None


def test_rebuild_refuses_folders_without_a_report_and_existing_pages(case: Case, tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"has no report\.json"):
        rebuild_case_page(tmp_path)
    (tmp_path / "report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="is not a readable JSON run report"):
        rebuild_case_page(tmp_path)
    folder = write_case_folder(case, tmp_path / "case-09", bare_report(case.report))
    rebuild_case_page(folder)
    with pytest.raises(OutputError, match="already exists"):
        rebuild_case_page(folder)
    before = (folder / "qc.html").stat().st_mtime_ns
    rebuild_case_page(folder, overwrite=True)
    assert (folder / "qc.html").stat().st_mtime_ns >= before
