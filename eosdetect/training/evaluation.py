"""Evaluate a model on labelled images, and fit its thresholds on validation data.

Ground truth per image is a set of true cells: centres, and optionally boxes
or an instance label image. A detection matches a true cell when it lies
inside the cell's box / mask, or within ``radius_px`` of its centre
(one-to-one, see :mod:`eosdetect.core.metrics`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from eosdetect.core.metrics import MatchResult, match_points, summarize
from eosdetect.models.config import Thresholds

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    """One labelled image for evaluation (input-image pixels throughout)."""

    name: str
    image: np.ndarray
    true_xy: np.ndarray
    true_boxes: np.ndarray | None = None
    true_labels: np.ndarray | None = None
    radius_px: float = 0.0
    #: Regions labelled "difficult": a detection there (and in no true box) is not counted at all.
    ignore_boxes: np.ndarray | None = None

    def ignored(self, pred_xy) -> np.ndarray:
        """Boolean mask of the predictions left out of matching (inside a difficult region only)."""
        p = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
        if self.ignore_boxes is None or not len(self.ignore_boxes) or not len(p):
            return np.zeros(len(p), dtype=bool)
        out = _inside_any(p, self.ignore_boxes)
        if self.true_boxes is not None and len(self.true_boxes):
            out &= ~_inside_any(p, self.true_boxes)
        return out

    def match(self, pred_xy) -> MatchResult:
        """Match predictions one-to-one to the true cells (ignored ones removed first)."""
        p = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
        ign = self.ignored(p)
        return match_points(
            p[~ign], self.true_xy, radius=self.radius_px,
            true_boxes=self.true_boxes, true_labels=self.true_labels,
        )


def _inside_any(p: np.ndarray, boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return (
        (p[:, None, 0] >= b[None, :, 0]) & (p[:, None, 0] <= b[None, :, 2])
        & (p[:, None, 1] >= b[None, :, 1]) & (p[:, None, 1] <= b[None, :, 3])
    ).any(axis=1)


class PredictionCache:
    """Each item's :meth:`~eosdetect.models.model.Model.predict_prob`, computed once,
    so that thresholds can be swept without running the networks again."""

    def __init__(self, model, items, pixel_size_um=None, progress=None):
        self.model = model
        self.items = items
        self.maps = []
        for it in items:
            self.maps.append(model.predict_prob(it.image, pixel_size_um=pixel_size_um))
            if progress is not None:
                progress()

    def candidates(self, i, thr: Thresholds):
        """Item ``i``'s candidates at thresholds ``thr`` (scored by the helper in two-stage models)."""
        return self.model.candidates(self.maps[i], thr)[1]


def evaluate_model(model, items: list[EvalItem], *, thresholds: Thresholds | None = None,
                   pixel_size_um: float | None = None, cache: PredictionCache | None = None,
                   keep_detections: bool = False) -> dict:
    """Detection metrics of ``model`` on ``items``.

    Returns
    -------
    dict
        ``summary`` (pooled precision, recall, F1, count errors), ``per_image``
        (list of dicts) and the ``thresholds`` used; with ``keep_detections``
        also ``detections`` (one :class:`~eosdetect.core.postprocess.Detections`
        per item, input pixels) and ``matches`` (their :class:`MatchResult`).
    """
    thr = thresholds or model.thresholds
    cache = cache or PredictionCache(model, items, pixel_size_um)
    results, per_image, kept = [], [], []
    for i, it in enumerate(items):
        dets = model.counted(cache.candidates(i, thr), thr)
        r = it.match(dets.xy)
        results.append(r)
        if keep_detections:
            kept.append(dets)
        per_image.append({
            "image": it.name, "true": r.n_true, "pred": r.n_pred, "tp": r.tp, "fp": r.fp, "fn": r.fn,
            **r.rates(),
        })
    out = {"summary": summarize(results), "per_image": per_image, "thresholds": thr.to_dict()}
    if keep_detections:
        out["detections"], out["matches"] = kept, results
    return out


def fit_thresholds(model, items: list[EvalItem], grid: dict[str, list[float]], *,
                   base: Thresholds | None = None, pixel_size_um: float | None = None) -> tuple[Thresholds, dict]:
    """Choose post-processing thresholds maximising pooled F1 on ``items``.

    Parameters
    ----------
    grid : dict
        Field name of :class:`Thresholds` -> candidate values. ``helper_threshold``
        is swept without re-segmenting.

    Returns
    -------
    (Thresholds, dict)
        The best thresholds and their evaluation (see :func:`evaluate_model`).
    """
    base = base or model.thresholds
    cache = PredictionCache(model, items, pixel_size_um)
    seg_keys = [k for k in grid if k != "helper_threshold"]
    helper_values = grid.get("helper_threshold", [base.helper_threshold])
    best, best_f1, best_key = base, -1.0, None
    for values in itertools.product(*[grid[k] for k in seg_keys]):
        try:
            thr = base.replace(**dict(zip(seg_keys, values)))
        except Exception as exc:  # an impossible combination (e.g. min > max)
            log.debug("skipping %s: %s", values, exc)
            continue
        cands = [cache.candidates(i, thr) for i in range(len(items))]
        for h in helper_values if model.config.helper_enabled else [thr.helper_threshold]:
            results = []
            for it, c in zip(items, cands):
                results.append(it.match(model.counted(c, thr.replace(helper_threshold=h)).xy))
            s = summarize(results)
            # prefer higher F1, then smaller count error
            key = (s["f1"], -s["count_mae"])
            if best_key is None or key > best_key:
                best_key, best_f1 = key, s["f1"]
                best = thr.replace(helper_threshold=h)
    log.info("fitted thresholds: F1 %.4f with %s", best_f1, best.to_dict())
    return best, evaluate_model(model, items, thresholds=best, cache=cache)
