"""Overlay pictures: the image with every counted cell outlined and the count on it.

Counted cells get a bright outline (with a dark rim so it stands out on pale
and dark stains alike) and a number matching their row in
``<stem>_detections.csv``; candidates the helper rejected get a thin grey
outline, so a reviewer sees what was considered and not counted. With a
multi-class helper every candidate is outlined in its class's colour
(:func:`class_colours`: the counted class green and numbered as above, the
others thinner in Okabe-Ito colours, ``other`` grey), and a legend in the
caption band names each colour with its count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eosdetect.core.geometry import axis_factors
from eosdetect.core.palette import COUNTED, REJECTED, class_colours  # noqa: F401 (class_colours: part of this API)
from eosdetect.core.postprocess import Detections
from eosdetect.io import printable

REJECTED_RIM = (80, 80, 80)  # a light line on a dark rim shows on pale smear background and on dark tissue alike
RIM = (0, 0, 0)
LABEL_LIMIT = 300  # number the cells when there are at most this many
MIN_CAPTION_WIDTH = 400  # narrower images are padded on the right so that the caption stays legible


def _contours(labels: np.ndarray, det: Detections, factor: tuple[float, float]) -> list[list[np.ndarray]]:
    """Outline polygons (input-image x, y) of each detection's instance in ``labels``.

    When ``labels`` is coarser than the image, each object's mask is enlarged
    with linear interpolation before tracing, so outlines are smooth rather
    than staircases.
    """
    import cv2

    out = []
    pad = 2
    fx, fy = factor
    up = max(1.0, fx, fy)
    for k, x0, y0, x1, y1 in zip(det.label, det.xmin, det.ymin, det.xmax, det.ymax):
        if k <= 0:
            out.append([])
            continue
        # box in label-image pixels
        r0 = max(int(np.floor(y0 / fy)) - pad, 0)
        c0 = max(int(np.floor(x0 / fx)) - pad, 0)
        r1 = min(int(np.ceil(y1 / fy)) + pad, labels.shape[0])
        c1 = min(int(np.ceil(x1 / fx)) + pad, labels.shape[1])
        mask = (labels[r0:r1, c0:c1] == k).astype(np.float32)
        if up > 1.0:
            size = (max(1, int(round(mask.shape[1] * up))), max(1, int(round(mask.shape[0] * up))))
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)
        cs, _ = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polys = []
        for c in cs:
            pts = c[:, 0, :].astype(np.float64)
            # pixel centres of the (enlarged) crop -> input-image pixel centres
            f = np.array([fx, fy])
            pts = (pts + 0.5) / up * f + np.array([c0, r0]) * f - 0.5
            polys.append(np.rint(pts).astype(np.int32))
        out.append(polys)
    return out


def draw_overlay(
    image: np.ndarray,
    detections: Detections,
    *,
    labels: np.ndarray | None = None,
    rejected: Detections | None = None,
    classified: Sequence[tuple[Detections, tuple[int, int, int]]] | None = None,
    legend: Sequence[tuple[str, tuple[int, int, int]]] | None = None,
    title: str = "",
    lines: list[str] | None = None,
    highlight_box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Draw detections on a copy of ``image``.

    Parameters
    ----------
    image : (M, N, 3) ndarray of uint8
    detections : Detections
        Counted cells (input pixels); outlined from ``labels`` when given,
        else circled.
    labels : (m, n) ndarray of int, optional
        Instance labels (any scale: the ratio to ``image`` is inferred).
    rejected : Detections, optional
        Candidates not counted (thin grey outlines).
    classified : sequence of (Detections, (r, g, b)), optional
        Candidates of other classes (a multi-class helper), each group in thin
        outlines of its colour (see :func:`class_colours`).
    legend : sequence of (str, (r, g, b)), optional
        Entries of a legend in the caption band: a swatch of the colour and its
        text (e.g. ``"neutrophil 12"``).
    title : str
        First line of the caption, e.g. ``"eosinophil: 12"``.
    lines : list of str
        More caption lines.
    highlight_box : (xmin, ymin, xmax, ymax), optional
        A region to frame (e.g. the densest high-power field).

    Returns
    -------
    (M + h, max(N, 400), 3) ndarray of uint8
        The picture, with a dark caption strip of height ``h`` on top (none
        when there is no caption) so that no cell is hidden under the text;
        an image narrower than 400 pixels is padded on the right for it.
    """
    import cv2

    canvas = np.ascontiguousarray(image.copy())
    rows, cols = canvas.shape[:2]
    ref = max(rows, cols)
    thick = max(1, int(round(ref / 500)))
    factor = axis_factors((rows, cols), labels.shape) if labels is not None else (1.0, 1.0)

    def outline(det: Detections, colour, width, rim):
        polys = _contours(labels, det, factor) if labels is not None else [[] for _ in range(len(det))]
        for i in range(len(det)):
            ps = polys[i]
            if ps:
                if rim:
                    cv2.polylines(canvas, ps, True, rim, width + 2, cv2.LINE_AA)
                cv2.polylines(canvas, ps, True, colour, width, cv2.LINE_AA)
            else:
                r = max(3, int(round(np.sqrt(max(det.area[i], 1.0) / np.pi))))
                centre = (int(round(det.x[i])), int(round(det.y[i])))
                if rim:
                    cv2.circle(canvas, centre, r, rim, width + 2, cv2.LINE_AA)
                cv2.circle(canvas, centre, r, colour, width, cv2.LINE_AA)

    if rejected is not None and len(rejected):
        outline(rejected, REJECTED, max(1, thick // 2), rim=REJECTED_RIM)
    counted_width = thick
    if classified:  # colours must show, on pale and dark stains alike: wider lines, a black rim
        thin = max(2, thick // 2 + 1)
        counted_width = max(thick, thin + 1)  # the counted cells still stand out
        for group, colour in classified:
            if len(group):
                outline(group, tuple(int(v) for v in colour), thin, rim=RIM)
    outline(detections, COUNTED, counted_width, rim=RIM)

    if 0 < len(detections) <= LABEL_LIMIT:
        scale = float(np.clip(ref / 1000, 0.5, 2.0))
        for i, (x, y0) in enumerate(zip(detections.x, detections.ymin), start=1):
            (w, _), _ = cv2.getTextSize(str(i), cv2.FONT_HERSHEY_SIMPLEX, scale, thick + 2)
            # centred over the cell, kept whole inside the picture (a cut "57" would read "5")
            org = (int(np.clip(round(x - w / 2), 1, max(1, cols - w - 1))), max(int(round(y0)) - 5, int(22 * scale)))
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_SIMPLEX, scale, RIM, thick + 2, cv2.LINE_AA)
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_SIMPLEX, scale, COUNTED, thick, cv2.LINE_AA)

    if highlight_box is not None:
        x0, y0, x1, y1 = (int(v) for v in highlight_box)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (255, 200, 0), thick + 1, cv2.LINE_AA)

    caption = [t for t in [title, *(lines or [])] if t]
    if caption or legend:
        if cols < MIN_CAPTION_WIDTH:  # room for a legible caption beside a narrow image
            pad = np.full((rows, MIN_CAPTION_WIDTH - cols, 3), 30, dtype=np.uint8)
            canvas = np.hstack([canvas, pad])
        canvas = _with_header(canvas, caption, thick, legend or ())
    return canvas


CAPTION_TEXT = (235, 235, 235)
HEADER_BACKGROUND = 30


def _ascii(text: str) -> str:
    """OpenCV's fonts draw ASCII only (and crash on a file name that is not UTF-8)."""
    return printable(text).encode("ascii", "replace").decode("ascii")


def _with_header(canvas: np.ndarray, caption: list[str], thick: int, legend=()) -> np.ndarray:
    """Stack a dark strip with the caption lines, and the legend's rows under them, above the picture."""
    import cv2

    cols = canvas.shape[1]
    scale = float(np.clip(cols / 1000, 0.45, 2.5))
    line_h = int(round(30 * scale))
    legend_rows = _legend_layout(legend, cols, scale, thick)
    n_lines = len(caption) + (max(r for r, _ in legend_rows) + 1 if legend_rows else 0)
    header = np.full((line_h * n_lines + int(10 * scale), cols, 3), HEADER_BACKGROUND, dtype=np.uint8)
    for i, text in enumerate(caption):
        text = _ascii(text)
        # shrink long lines to fit the width
        s = scale
        while s > 0.3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, thick)[0][0] > cols - 10:
            s *= 0.9
        org = (int(6 * scale), int(line_h * (i + 1) - 6 * scale + 3))
        colour = COUNTED if i == 0 else CAPTION_TEXT
        cv2.putText(header, text, org, cv2.FONT_HERSHEY_SIMPLEX, s, colour, thick + (1 if i == 0 else 0), cv2.LINE_AA)
    swatch = max(6, int(round(16 * scale)))
    for (row, x), (text, colour) in zip(legend_rows, legend):
        base = int(line_h * (len(caption) + row + 1) - 6 * scale + 3)  # the text's baseline
        y0 = base - swatch + max(1, int(2 * scale))
        cv2.rectangle(header, (x, y0), (x + swatch - 1, y0 + swatch - 1), tuple(int(v) for v in colour), -1)
        cv2.rectangle(header, (x, y0), (x + swatch - 1, y0 + swatch - 1), CAPTION_TEXT, 1)  # dark colours show too
        cv2.putText(header, _ascii(text), (x + swatch + int(6 * scale), base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    CAPTION_TEXT, thick, cv2.LINE_AA)
    return np.vstack([header, canvas])


def _legend_layout(legend, cols: int, scale: float, thick: int) -> list[tuple[int, int]]:
    """``(row, x)`` of each legend entry: left to right, wrapped to the next row at the band's width."""
    import cv2

    swatch = max(6, int(round(16 * scale)))
    left, gap = int(6 * scale), int(20 * scale)
    out, row, x = [], 0, left
    for text, _ in legend:
        w = swatch + int(6 * scale) + cv2.getTextSize(_ascii(text), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
        if x > left and x + w > cols - left:
            row, x = row + 1, left
        out.append((row, x))
        x += w + gap
    return out
