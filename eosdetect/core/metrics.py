"""Detection metrics by one-to-one point matching.

A predicted point may match a true cell when it lies inside the cell's region
(its box or its instance mask) or within ``radius`` pixels of its centre.
Among allowed pairs, a maximum one-to-one matching of least total distance is
found with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``);
matched predictions are true positives, the other predictions false positives,
the unmatched true cells false negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class MatchResult:
    """Outcome of matching one image's predictions to its true cells."""

    tp: int
    fp: int
    fn: int
    #: ``(k, 2)`` array of matched (prediction index, truth index).
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=int))

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def rates(self) -> dict:
        """``precision``, ``recall``, ``f1`` rounded to 4 digits for reports; precision is None when
        nothing was detected and recall None when there was nothing to find (undefined, not 1.0)."""
        return {"precision": round(self.precision, 4) if self.n_pred else None,
                "recall": round(self.recall, 4) if self.n_true else None, "f1": round(self.f1, 4)}

    def matched_pred(self) -> np.ndarray:
        """Boolean mask over predictions: True where matched."""
        m = np.zeros(self.n_pred, dtype=bool)
        m[self.pairs[:, 0]] = True
        return m

    def matched_true(self) -> np.ndarray:
        """Boolean mask over true cells: True where matched."""
        m = np.zeros(self.n_true, dtype=bool)
        m[self.pairs[:, 1]] = True
        return m


def _ratio(num: float, den: float) -> float:
    """``num / den``, with 1.0 for 0/0 (nothing to find and nothing found is perfect)."""
    return float(num) / den if den else 1.0


def match_points(
    pred_xy,
    true_xy,
    *,
    radius: float = 0.0,
    true_boxes=None,
    true_labels: np.ndarray | None = None,
) -> MatchResult:
    """Match predicted to true cells one-to-one.

    Parameters
    ----------
    pred_xy : (n, 2) array_like
        Predicted centres, columns ``x, y`` (pixels).
    true_xy : (m, 2) array_like
        True centres, columns ``x, y``.
    radius : float
        A pair is allowed when the centres are at most this far apart.
    true_boxes : (m, 4) array_like, optional
        ``xmin, ymin, xmax, ymax`` per true cell; a prediction inside the box
        (edges included) is allowed to match it.
    true_labels : (M, N) ndarray of int, optional
        Instance label image whose label ``k + 1`` is true cell ``k``; a
        prediction on one of its pixels is allowed to match it.

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> r = match_points([[0, 0], [10, 0], [50, 50]], [[1, 0], [9, 1]], radius=3)
    >>> (r.tp, r.fp, r.fn)
    (2, 1, 0)
    """
    p = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    t = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    n, m = len(p), len(t)
    if n == 0 or m == 0:
        return MatchResult(0, n, m)
    dist = np.hypot(p[:, None, 0] - t[None, :, 0], p[:, None, 1] - t[None, :, 1])
    allowed = dist <= radius
    if true_boxes is not None:
        b = np.asarray(true_boxes, dtype=float).reshape(-1, 4)
        if len(b) != m:
            raise ValueError(f"true_boxes has {len(b)} rows for {m} true cells")
        allowed |= (
            (p[:, None, 0] >= b[None, :, 0]) & (p[:, None, 0] <= b[None, :, 2])
            & (p[:, None, 1] >= b[None, :, 1]) & (p[:, None, 1] <= b[None, :, 3])
        )
    if true_labels is not None:
        lab = np.asarray(true_labels)
        r = np.clip(np.rint(p[:, 1]).astype(int), 0, lab.shape[0] - 1)
        c = np.clip(np.rint(p[:, 0]).astype(int), 0, lab.shape[1] - 1)
        hit = lab[r, c].astype(int) - 1  # true index, -1 for background
        ok = (hit >= 0) & (hit < m)
        allowed[np.flatnonzero(ok), hit[ok]] = True
    if not allowed.any():
        return MatchResult(0, n, m)
    # Hungarian on the allowed pairs only: rows/cols that take part
    rows = np.flatnonzero(allowed.any(axis=1))
    cols = np.flatnonzero(allowed.any(axis=0))
    sub_allowed = allowed[np.ix_(rows, cols)]
    big = 1e6 + dist.max() * 10
    cost = np.where(sub_allowed, dist[np.ix_(rows, cols)], big)
    ri, ci = linear_sum_assignment(cost)
    good = sub_allowed[ri, ci]
    pairs = np.stack([rows[ri[good]], cols[ci[good]]], axis=1)
    tp = len(pairs)
    return MatchResult(tp, n - tp, m - tp, pairs)


def prf(tp: int, fp: int, fn: int) -> dict:
    """``precision``, ``recall``, ``f1`` of counts, rounded to 4 digits (precision None
    when nothing was counted, recall None when there was nothing to find).

    >>> prf(8, 2, 2)
    {'precision': 0.8, 'recall': 0.8, 'f1': 0.8}
    """
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 1.0}


def fmt_rate(value) -> str:
    """A precision or recall for people: undefined ones (nothing detected, nothing to find) are n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def summarize(results: list[MatchResult], pred_counts=None, true_counts=None) -> dict:
    """Pool per-image match results into overall metrics.

    Returns a dict with ``tp, fp, fn, precision, recall, f1`` (pooled over all
    cells; see :meth:`MatchResult.rates`), ``count_mae`` (mean absolute count error per image),
    ``count_mape`` (mean relative count error over images with true cells),
    ``count_pearson_r`` and ``n_images``.
    """
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    pooled = MatchResult(tp, fp, fn)
    pc = np.array([r.n_pred for r in results] if pred_counts is None else pred_counts, dtype=float)
    tc = np.array([r.n_true for r in results] if true_counts is None else true_counts, dtype=float)
    out = {
        "n_images": len(results),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        **pooled.rates(),
        "count_mae": round(float(np.mean(np.abs(pc - tc))), 4) if len(tc) else 0.0,
    }
    nz = tc > 0
    out["count_mape"] = round(float(np.mean(np.abs(pc[nz] - tc[nz]) / tc[nz])), 4) if nz.any() else None
    if len(tc) > 2 and np.std(pc) > 0 and np.std(tc) > 0:
        out["count_pearson_r"] = round(float(np.corrcoef(pc, tc)[0, 1]), 4)
    else:
        out["count_pearson_r"] = None
    return out
