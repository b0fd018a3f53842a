"""What ``eosdetect count`` writes: analyses rendered into rows, tables and files.

Each image's analysis (:class:`~eosdetect.analysis.image.ImageAnalysis`, or
:class:`~eosdetect.analysis.slide.SlideAnalysis` for a slide) becomes a typed
:class:`CountRow`, its line of ``counts.csv`` (the web service renders its
figures the same way); a run's :class:`ImageRecord` list becomes
``counts.csv`` and ``summary.json``. Rounding and CSV/JSON shapes live here
only.

With a multi-class helper every row also holds its white-cell differential:
one ``n_<class>`` column per class at the end of ``counts.csv``, their sum
in ``summary.json``'s ``differential``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect import __version__
from eosdetect.apps.batch.naming import EXPORT_FORMATS
from eosdetect.core.clinical import ESTIMATE, ClinicalAggregate, ImageFigures, clinical_aggregate, per_hpf_text
from eosdetect.core.differential import COLUMN_PREFIX, Differential, class_column, class_columns
from eosdetect.core.postprocess import DETECTION_COLUMNS
from eosdetect.io import StagedFiles, csv_text, image_bytes, text_bytes, write_csv

COUNT_COLUMNS = (
    "image", "output_name", "status", "count", "width", "height", "pixel_size_um", "area_mm2", "density_per_mm2",
    "peak_hpf_count", "hpf_flag", "per_hpf", "hpf_basis", "candidates", "seconds", "error",
)


def count_columns(config) -> tuple[str, ...]:
    """The columns of counts.csv for a model: :data:`COUNT_COLUMNS`, then, with a multi-class
    helper, one ``n_<class>`` per class (:func:`eosdetect.core.differential.class_columns`)."""
    return COUNT_COLUMNS + class_columns(config)


# --------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class CountRow:
    """One image's line of ``counts.csv`` (as its resume record keeps it).

    Figures are rounded as the table shows them; ``per_hpf`` is the figure
    ``hpf_flag`` judges, the peak (``hpf_basis`` ``"peak"``, the same as
    ``peak_hpf_count``) or, in an image smaller than a high-power field, an
    estimate from its density (``"estimate"``, and no ``peak_hpf_count``);
    ``classes`` are a multi-class helper's counts per class (its
    ``n_<class>`` columns); ``error`` is the reason a failed image failed,
    without its path.
    """

    image: str
    status: str = "ok"
    count: int | None = None
    width: int | None = None
    height: int | None = None
    pixel_size_um: float | None = None
    area_mm2: float | None = None
    density_per_mm2: float | None = None
    peak_hpf_count: int | None = None
    hpf_flag: bool | None = None
    per_hpf: float | None = None
    hpf_basis: str = ""
    candidates: int | None = None
    error: str = ""
    classes: dict[str, int] | None = None
    warning: str = ""
    seconds: float | None = None

    def to_dict(self) -> dict:
        """The row as a JSON object (the resume record's ``row``); a failed image's holds its reason alone."""
        if self.status == "error":
            return {"image": self.image, "status": self.status, "error": self.error}
        out = {
            "image": self.image, "status": self.status, "count": self.count, "width": self.width,
            "height": self.height, "pixel_size_um": self.pixel_size_um, "area_mm2": self.area_mm2,
            "density_per_mm2": self.density_per_mm2, "peak_hpf_count": self.peak_hpf_count,
            "hpf_flag": self.hpf_flag, "per_hpf": self.per_hpf, "hpf_basis": self.hpf_basis or None,
            "candidates": self.candidates, "error": self.error,
        }
        out.update({class_column(k): v for k, v in (self.classes or {}).items()})
        if self.warning:
            out["warning"] = self.warning
        out["seconds"] = self.seconds
        return out

    @classmethod
    def from_dict(cls, d: dict) -> CountRow:
        """A row from :meth:`to_dict`'s object (a resume record; one of an older version, without
        ``per_hpf``, loads too: the run's summary takes its figure from the peak, see
        :meth:`eosdetect.core.clinical.ImageFigures.figure`)."""
        classes = {k[len(COLUMN_PREFIX):]: int(v) for k, v in d.items() if k.startswith(COLUMN_PREFIX)}
        plain = {k: d[k] for k in ("status", "count", "width", "height", "pixel_size_um", "area_mm2",
                                   "density_per_mm2", "peak_hpf_count", "hpf_flag", "per_hpf", "hpf_basis",
                                   "candidates", "error", "warning", "seconds") if d.get(k) is not None}
        return cls(image=str(d.get("image", "")), classes=classes or None, **plain)

    def cells(self, columns, output_name: str = "") -> list:
        """The row's cells of counts.csv, in ``columns`` order; ``output_name`` is the stem of the
        image's output files (``<output_name>_detections.csv``)."""
        d = self.to_dict()
        d["output_name"] = output_name
        return [_csv_value(d.get(k)) for k in columns]

    def differential(self, config) -> Differential | None:
        """The white-cell differential the row holds (None without one)."""
        return Differential.from_columns(self.to_dict(), config)


def image_row(image: str, analysis, seconds: float | None = None) -> CountRow:
    """The counts.csv row of an :class:`~eosdetect.analysis.image.ImageAnalysis`."""
    hpf = analysis.hpf
    return CountRow(
        image=image, count=analysis.count, width=analysis.width, height=analysis.height,
        pixel_size_um=analysis.pixel_size_um,
        area_mm2=None if hpf is None else significant(hpf.area_mm2),
        density_per_mm2=None if hpf is None else round(hpf.density_per_mm2, 2),
        peak_hpf_count=None if hpf is None else hpf.peak_count, hpf_flag=None if hpf is None else hpf.flag,
        **_per_hpf(hpf), candidates=len(analysis.candidates), classes=_classes(analysis.differential),
        warning="; ".join(analysis.warnings), seconds=_seconds(seconds),
    )


def slide_row(image: str, analysis, seconds: float | None = None) -> CountRow:
    """The counts.csv row of a :class:`~eosdetect.analysis.slide.SlideAnalysis` (its area: the tissue's)."""
    known = analysis.hpf is not None
    return CountRow(
        image=image, count=analysis.count, width=analysis.width, height=analysis.height,
        pixel_size_um=analysis.pixel_size_um,
        area_mm2=significant(analysis.area_mm2) if known else None,
        density_per_mm2=round(analysis.density_per_mm2, 2) if known else None,
        peak_hpf_count=analysis.peak_hpf_count, hpf_flag=analysis.hpf_flag, **_per_hpf(analysis.hpf),
        candidates=analysis.candidates, classes=_classes(analysis.differential), warning="; ".join(analysis.warnings),
        seconds=_seconds(seconds),
    )


def error_row(image: str, reason: str) -> CountRow:
    """The row of an image that failed, for ``reason`` (one line, without the path)."""
    return CountRow(image=image, status="error", error=reason)


def significant(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (an area of 0.000101 mm2 keeps its 101).

    >>> significant(0.000101234567)
    0.000101235
    """
    return float(f"{value:.{digits}g}")


def _per_hpf(hpf) -> dict:
    """A row's ``per_hpf`` and ``hpf_basis`` from an :class:`~eosdetect.core.clinical.HpfSummary` (none without)."""
    return {} if hpf is None else {"per_hpf": hpf.per_hpf, "hpf_basis": hpf.per_hpf_basis}


def _classes(diff: Differential | None) -> dict[str, int] | None:
    return None if diff is None else dict(diff.counts)


def _seconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _csv_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else v


# --------------------------------------------------------------------------- one image's files


def export_bytes(kind: str, analysis, image_path) -> bytes:
    """An analysed image's or slide's cells in the format ``kind`` (:data:`EXPORT_FORMATS`); the
    same bytes on every run (GeoJSON feature ids are drawn from the image's file name)."""
    if kind == "geojson":
        from eosdetect.annotations.geojson import analysis_to_geojson, geojson_text

        return text_bytes(geojson_text(analysis_to_geojson(analysis, id_seed=Path(str(image_path)).name)))
    if kind == "napari":
        from eosdetect.annotations.napari import napari_points_text

        result = getattr(analysis, "result", None)
        if result is not None and result.class_names:  # every white cell, with its class
            cells = result.candidates
            classes = [result.class_names[k] for k in result.candidate_class]
        else:
            cells = analysis.detections
            classes = [analysis.config.class_name] * len(cells)
        return text_bytes(napari_points_text(cells.xy, classes=classes, scores=cells.score))
    raise ValueError(f"unknown export format {kind!r}; choose from {', '.join(EXPORT_FORMATS)}")


def exports_of(analysis, image_path, kinds) -> dict[str, bytes]:
    """``{kind: bytes}`` of :func:`export_bytes` for each format in ``kinds``."""
    return {kind: export_bytes(kind, analysis, image_path) for kind in kinds}


def write_outputs(paths: dict, detection_rows, *, overlay=None, heatmap=None, exports: dict | None = None,
                  before_replacing=None) -> None:
    """Write one image's ``<name>_detections.csv``, pictures (arrays, or PNG bytes) and exports
    (``{format: bytes}``, :data:`EXPORT_FORMATS`) together
    (:class:`~eosdetect.io.StagedFiles`): all are written whole before any earlier file is replaced,
    so a full disk leaves an earlier run's files as they were. ``before_replacing()`` is called
    then (the resume record of the earlier files is withdrawn). The pictures of an earlier run
    that this one does not draw are removed (an overlay of other thresholds must not sit beside
    the new detections), and so is an earlier export this run does not make."""
    with StagedFiles() as staged:
        staged.add(paths["detections"], text_bytes(csv_text(DETECTION_COLUMNS, detection_rows)))
        for kind, data in (exports or {}).items():
            staged.add(paths[kind], data)
        for key, picture in (("overlay", overlay), ("heatmap", heatmap)):
            if picture is not None:
                staged.add(paths[key], picture if isinstance(picture, bytes) else image_bytes(paths[key], picture))
        if before_replacing is not None:
            before_replacing()
    for key, picture in (("overlay", overlay), ("heatmap", heatmap)):
        if picture is None:
            paths[key].unlink(missing_ok=True)
    for kind in EXPORT_FORMATS:
        if kind not in (exports or {}):
            paths[kind].unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run


@dataclass
class ImageRecord:
    """One image of a run: its output name, how it went (``ok``, ``skipped`` as done,
    ``error``: ``error`` says why, with its path) and its row."""

    image: str
    name: str
    status: str = "ok"
    error: str = ""
    row: CountRow | None = field(default=None)


def write_counts(path, records: list[ImageRecord], columns) -> None:
    """``counts.csv``: one row per record, in ``columns``, with the stem of its output files."""
    write_csv(path, columns, [r.row.cells(columns, r.name) for r in records])


def run_differential(records: list[ImageRecord], config) -> Differential | None:
    """The images' differentials summed (None without a multi-class helper)."""
    if not config.multiclass:
        return None
    total = Differential.empty(config)
    for r in _ok(records):
        d = r.row.differential(config)
        if d is not None:
            total = total + d
    return total


def run_summary(records: list[ImageRecord], *, model, settings: dict, differential: Differential | None,
                hpf_area_mm2: float, flag_threshold, complete: bool, seconds: float) -> dict:
    """What ``summary.json`` holds (``differential``: :func:`run_differential` of ``records``)."""
    ok = _ok(records)
    failed = [r for r in records if r.row.status != "ok"]
    counts = [int(r.row.count) for r in ok]
    out = {
        "eosdetect_version": __version__,
        "complete": complete,
        "model": model.summary(),
        "settings": settings,
        "images": len(records),
        "images_ok": len(ok),
        "images_skipped_as_done": sum(r.status == "skipped" for r in records),
        "images_failed": len(failed),
        "total_count": int(sum(counts)),
        "mean_count": round(float(np.mean(counts)), 3) if counts else None,
        "max_count": max(counts) if counts else None,
        **({} if differential is None else {"differential": differential.to_dict()}),
        "failures": [{"image": r.image, "error": r.row.error} for r in failed],
        "warnings": [{"image": r.image, "warning": r.row.warning} for r in records
                     if r.status != "error" and r.row.warning],
        "seconds": round(seconds, 2),
    }
    agg = clinical_aggregate([_figures(r) for r in ok], hpf_area_mm2=hpf_area_mm2, threshold=flag_threshold)
    if agg is None:
        out["clinical"] = None
        out["clinical_note"] = ("densities and per-HPF counts need the pixel size: "
                                "give --pixel-size (micrometres per pixel)")
    else:
        out["clinical"] = clinical_entry(agg)
    return out


def clinical_entry(agg: ClinicalAggregate) -> dict:
    """summary.json's ``clinical``: ``per_hpf``, the highest per-HPF figure of any image (the one
    ``flag`` judges), ``per_hpf_basis`` (``"peak"``, or ``"estimate"`` from the density of an image
    smaller than a field), its image and the fields that image covers; ``peak_hpf_count``, the
    highest peak of the images of at least one field (None when there are none); a note when every
    image is smaller than a field."""
    hpf = agg.hpf_area_mm2
    d = agg.density_per_mm2
    fields = agg.per_hpf_image_fields
    out = {
        "total_area_mm2": significant(agg.total_area_mm2),
        "density_per_mm2": round(d, 2) if d is not None else None,
        "density_per_hpf": round(agg.density_per_hpf, 2) if d is not None else None,
        "images_with_area": agg.images_with_area,
        "per_hpf": agg.per_hpf,
        "per_hpf_basis": agg.per_hpf_basis,
        "per_hpf_image": agg.per_hpf_image,
        "per_hpf_image_fields": None if fields is None else significant(fields, 3),
        "peak_hpf_count": agg.peak_hpf_count,
        "peak_hpf_image": agg.peak_hpf_image,
        "images_smaller_than_field": agg.images_estimated,
        "hpf_area_mm2": hpf,
        "threshold": agg.threshold,
        "flag": agg.flag,
    }
    if agg.every_image_smaller_than_field:
        largest = "" if agg.largest_frame_mm2 is None else f"; the largest covers {agg.largest_frame_mm2 / hpf:.2g} of one"
        out["note"] = (
            f"every image is smaller than a high-power field ({hpf:g} mm2{largest}): none holds a whole field, so "
            "none has a peak; each image's per-HPF figure is estimated from its density (count x field area / "
            "image area)" + ("" if agg.threshold is None else " and the flag judges that estimate")
            + "; set --hpf-area if your microscope's field is not " + f"{hpf:g} mm2")
    return out


def clinical_line(clinical: dict) -> str:
    """The run's clinical summary in one line, as ``eosdetect count`` prints it, from
    summary.json's ``clinical`` (:func:`clinical_entry`)."""
    image = Path(str(clinical["per_hpf_image"])).name
    if clinical["per_hpf_basis"] == ESTIMATE:
        fields = clinical.get("per_hpf_image_fields")
        covers = "" if fields is None else f": it covers {fields:.2g} of a field"
        line = (per_hpf_text(clinical["per_hpf"], ESTIMATE, unit=" per high-power field")
                + f" ({image}{covers})")
    else:
        line = f"Peak {clinical['per_hpf']:g} per high-power field ({image})"
    by_density = clinical["density_per_hpf"]
    line += "; " + (f"mean {by_density:.1f} per field by density" if by_density is not None
                    else "no density (no measured area)")
    if clinical["flag"] is not None:
        line += f"; flag: {'YES' if clinical['flag'] else 'no'} (threshold {clinical['threshold']:g} per field)"
    return line


def _ok(records: list[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.row.status == "ok"]


def _figures(r: ImageRecord) -> ImageFigures:
    """An image's figures for the run's clinical summary (its frame only where its area is known)."""
    row = r.row
    area = float(row.area_mm2) if row.area_mm2 else None
    return ImageFigures(image=r.image, count=int(row.count), peak_hpf_count=row.peak_hpf_count, area_mm2=area,
                        frame_mm2=_frame_mm2(row) if area else None, per_hpf=row.per_hpf,
                        per_hpf_is_estimate=row.hpf_basis == ESTIMATE)


def _frame_mm2(row: CountRow) -> float:
    """The area a row's picture covers, in mm²: its whole frame (a slide's ``area_mm2``
    is its tissue alone, which can be small on a large slide)."""
    try:
        return int(row.width) * int(row.height) * float(row.pixel_size_um) ** 2 / 1e6
    except (TypeError, ValueError):
        return float(row.area_mm2)
