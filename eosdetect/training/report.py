"""The evaluation report: metrics, per-image table, precision-recall curve, error overlays.

Written by ``eosdetect evaluate`` (and by ``eosdetect train`` for its
validation images)::

    report/metrics.json         pooled precision, recall, F1, count errors, settings
    report/per_image.csv        one row per image
    report/pr_curve.csv, .png   precision and recall over the score threshold
    report/<stem>_errors.png    true positives, false positives, false negatives
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from eosdetect.core.metrics import summarize
from eosdetect.io import atomic_write_bytes, encode_png, write_csv, write_json

log = logging.getLogger(__name__)

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), RGB
TP_COLOUR = (0, 158, 115)  # bluish green: found and right
FP_COLOUR = (230, 159, 0)  # orange: found, not a true cell
FN_COLOUR = (86, 180, 233)  # sky blue: a true cell that was missed
IGNORED_COLOUR = (200, 200, 200)


def pr_curve(model, items, cache, thresholds) -> tuple[str, list[dict]]:
    """Precision and recall over the score that decides what is counted.

    One-stage models: the U-Net probability threshold (re-segmenting at each
    value, 0.05 to 0.95). Two-stage models: the helper's threshold on the
    fixed U-Net candidates (0 to 1 in steps of 0.02).

    Returns the name of the swept threshold and one row per value.
    """
    rows = []
    if model.config.helper_enabled:
        name = "helper_threshold"
        cands = [cache.candidates(i, thresholds) for i in range(len(items))]
        values = np.round(np.arange(0.0, 1.0001, 0.02), 2)
        for v in values:
            results = [it.match(c.subset(c.score >= v).xy) for it, c in zip(items, cands)]
            rows.append(_row(name, v, summarize(results)))
    else:
        name = "prob_threshold"
        for v in np.round(np.arange(0.05, 0.951, 0.05), 2):
            thr = thresholds.replace(prob_threshold=float(v))
            results = [it.match(cache.candidates(i, thr).xy) for i, it in enumerate(items)]
            rows.append(_row(name, v, summarize(results)))
    return name, rows


def _row(name, value, s) -> dict:
    # nothing detected: precision is undefined (blank in the CSV, not plotted), not a perfect 1.0
    precision = s["precision"] if s["tp"] + s["fp"] else None
    return {name: float(value), "precision": precision, "recall": s["recall"], "f1": s["f1"],
            "tp": s["tp"], "fp": s["fp"], "fn": s["fn"]}


def plot_pr_curve(rows: list[dict], name: str, operating: dict, path, title: str = "",
                  operating_label: str = "model's thresholds") -> Path:
    """Draw the precision-recall curve with the operating point (the thresholds counted with) marked.

    Drawn on a :class:`matplotlib.figure.Figure` of its own, without pyplot: the caller's backend
    and open figures are left alone.
    """
    from matplotlib.figure import Figure

    drawn = [x for x in rows if x["precision"] is not None]
    r = [x["recall"] for x in drawn]
    p = [x["precision"] for x in drawn]
    fig = Figure(figsize=(5.5, 5), dpi=120)
    ax = fig.subplots()
    ax.plot(r, p, "-o", color="#0072B2", ms=3, lw=1.5, label=f"sweeping {name.replace('_', ' ')}")
    best = max(rows, key=lambda x: x["f1"])
    if operating["tp"] + operating["fp"]:
        ax.plot([operating["recall"]], [operating["precision"]], "D", color="#D55E00", ms=8,
                label=f"{operating_label}: F1 {operating['f1']:.3f}")
    else:  # nothing detected: no precision to mark
        ax.plot([], [], "D", color="#D55E00", ms=8, label=f"{operating_label}: nothing detected")
    if best["f1"] > operating["f1"] + 1e-9:
        ax.plot([best["recall"]], [best["precision"]], "s", mfc="none", mec="#009E73", ms=9, mew=1.5,
                label=f"best on these images: F1 {best['f1']:.3f} at {best[name]:g}")
    for f in (0.5, 0.7, 0.9):  # iso-F1 lines
        rr = np.linspace(f / (2 - f) + 1e-3, 1, 100)
        ax.plot(rr, f * rr / (2 * rr - f), ":", color="0.75", lw=0.8)
        ax.annotate(f"F1={f}", (1.0, f / (2 - f)), fontsize=7, color="0.5", ha="right", va="bottom")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title or "precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def error_overlay(item, detections, match, ignored) -> np.ndarray:
    """The image with true positives (green circles), false positives (orange
    crosses) and missed cells (blue squares), and a legend in the caption."""
    import cv2

    from eosdetect.analysis.overlay import _with_header

    canvas = np.ascontiguousarray(item.image.copy())
    ref = max(canvas.shape[:2])
    thick = max(1, int(round(ref / 600)))
    r = int(np.clip(ref / 120, 5, 14))
    kept = detections.subset(~ignored)
    mp, mt = match.matched_pred(), match.matched_true()

    def mark(shape, x, y, colour, size=r, box=None):
        c = (int(round(x)), int(round(y)))
        for col, w in (((0, 0, 0), thick + 2), (colour, thick)):
            if shape == "circle":
                cv2.circle(canvas, c, size, col, w, cv2.LINE_AA)
            elif shape == "cross":
                cv2.drawMarker(canvas, c, col, cv2.MARKER_TILTED_CROSS, 2 * size, w, cv2.LINE_AA)
            elif box is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), col, w, cv2.LINE_AA)
            else:
                cv2.rectangle(canvas, (c[0] - size, c[1] - size), (c[0] + size, c[1] + size), col, w, cv2.LINE_AA)

    def cell_radius(area):  # markers as big as the cell, so they frame it rather than hide it
        return int(max(r, round(np.sqrt(max(float(area), 1.0) / np.pi))))

    for x, y in detections.subset(ignored).xy:
        cv2.circle(canvas, (int(round(x)), int(round(y))), r, IGNORED_COLOUR, 1, cv2.LINE_AA)
    for (x, y), a, ok in zip(kept.xy, kept.area, mp):
        mark("circle" if ok else "cross", x, y, TP_COLOUR if ok else FP_COLOUR, size=cell_radius(a))
    boxes = item.true_boxes if item.true_boxes is not None and len(item.true_boxes) == len(item.true_xy) else None
    for i, ((x, y), ok) in enumerate(zip(item.true_xy, mt)):
        if not ok:
            mark("square", x, y, FN_COLOUR, box=None if boxes is None else boxes[i])
    caption = [f"{item.name}: {match.tp} correct, {match.fp} false, {match.fn} missed", " "]
    out = _with_header(canvas, caption, thick)
    # the legend line, each entry in its own colour
    scale = float(np.clip(out.shape[1] / 1000, 0.45, 2.5))
    line_h = int(round(30 * scale))
    x, y = int(6 * scale), int(line_h * 2 - 6 * scale + 3)
    for text, colour in (("o correct", TP_COLOUR), ("x false positive", FP_COLOUR), ("[] missed", FN_COLOUR),
                         ("(grey: in a 'difficult' box, not counted)", IGNORED_COLOUR)):
        if colour == IGNORED_COLOUR and not ignored.any():
            continue
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.9, colour, thick, cv2.LINE_AA)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.9, thick)[0][0] + int(25 * scale)
    return out


def count_agreement(per_image: list[dict], threshold: float) -> dict:
    """Agreement of "count >= threshold" decisions between prediction and truth."""
    t = np.array([r["true"] >= threshold for r in per_image])
    p = np.array([r["pred"] >= threshold for r in per_image])
    pos, neg = t.sum(), (~t).sum()
    return {
        "threshold": threshold,
        "images": int(len(t)),
        "agreement": round(float((t == p).mean()), 4) if len(t) else None,
        "sensitivity": round(float((p & t).sum() / pos), 4) if pos else None,
        "specificity": round(float((~p & ~t).sum() / neg), 4) if neg else None,
        "true_positive_images": int(pos),
    }


def write_report(out_dir, model, items, evaluation: dict, *, cache=None, overlays: bool = True,
                 count_threshold: float | None = None, settings: dict | None = None, progress=None) -> dict:
    """Write the report folder; returns the metrics dict (also ``metrics.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(evaluation["summary"])
    metrics = {
        "model": model.summary() | {"metrics_json": (model.metrics or {}).get("validation")},
        "summary": summary,
        "thresholds": evaluation["thresholds"],
        "settings": settings or {},
    }
    if count_threshold is not None:
        metrics["count_agreement"] = count_agreement(evaluation["per_image"], count_threshold)
    cols = ["image", "true", "pred", "tp", "fp", "fn", "precision", "recall", "f1"]
    write_csv(out / "per_image.csv", cols, [[r[c] for c in cols] for r in evaluation["per_image"]])
    if cache is not None:
        from eosdetect.models.config import Thresholds

        name, rows = pr_curve(model, items, cache, Thresholds.from_dict(evaluation["thresholds"]))
        keys = list(rows[0])
        write_csv(out / "pr_curve.csv", keys, [[r[k] for k in keys] for r in rows])
        given = {k: v for k, v in evaluation["thresholds"].items() if model.thresholds.to_dict().get(k) != v}
        label = ("thresholds given (" + ", ".join(f"{k} {v}" for k, v in given.items()) + ")" if given
                 else "model's thresholds")
        plot_pr_curve(rows, name, summary, out / "pr_curve.png", title=f"{model.name} on {len(items)} image(s)",
                      operating_label=label)
        best = max(rows, key=lambda x: x["f1"])
        metrics["pr_curve"] = {"swept": name, "best_f1": best["f1"], "best_at": best[name]}
    if overlays and "detections" in evaluation:
        for it, det, m in zip(items, evaluation["detections"], evaluation["matches"]):
            ign = it.ignored(det.xy)
            atomic_write_bytes(out / f"{it.name}_errors.png", encode_png(error_overlay(it, det, m, ign)))
            if progress:
                progress()
    write_json(out / "metrics.json", metrics)
    return metrics
