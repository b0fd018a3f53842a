"""The white-cell differential: how many cells of each class a multi-class helper saw.

A two-stage model whose helper tells several classes apart
(:attr:`~eosdetect.models.config.ModelConfig.multiclass`) gives every
candidate a class (:attr:`eosdetect.models.predict.Result.candidate_class`). A
:class:`Differential` holds the number of candidates of each class and
which classes are not white cells (``helper_not_in_differential``: their
counts are reported, but they are left out of the percentages).

It is the one place for these rules, used by ``counts.csv`` (one ``n_<class>``
column per class), ``summary.json``, the end-of-run line on the screen, the
overlay's legend and the web API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: counts.csv column of a class: ``n_<class>``.
COLUMN_PREFIX = "n_"
#: Decimals of the percentages in JSON (the screen line shows one).
PERCENT_DECIMALS = 2


def class_column(name: str) -> str:
    """The counts.csv column of class ``name``.

    >>> class_column("neutrophil")
    'n_neutrophil'
    """
    return f"{COLUMN_PREFIX}{name}"


def class_columns(config) -> tuple[str, ...]:
    """The counts.csv columns a model adds: one per class of a multi-class helper, none otherwise.

    Parameters
    ----------
    config : eosdetect.models.config.ModelConfig

    Returns
    -------
    tuple of str
    """
    return tuple(class_column(c) for c in config.helper_classes) if config.multiclass else ()


@dataclass(frozen=True)
class Differential:
    """Candidates of each class, in the model's class order.

    Attributes
    ----------
    counts : dict of str to int
        Every class of the helper (zero when none was seen), in the order of
        ``helper_classes``.
    not_in_differential : tuple of str
        Classes that are not white cells: counted, but left out of
        :attr:`white_cells` and the percentages.

    Examples
    --------
    >>> d = Differential({"eosinophil": 1, "neutrophil": 3, "other": 2}, ("other",))
    >>> d.white_cells, d.percent("eosinophil"), d.percent("other")
    (4, 25.0, None)
    >>> d.line()
    'White cells: 4 (eosinophil 25.0%, neutrophil 75.0%); not white cells: other 2'
    """

    counts: dict[str, int]
    not_in_differential: tuple[str, ...] = field(default=())

    def __post_init__(self):
        counts = {str(k): int(v) for k, v in dict(self.counts).items()}
        if any(v < 0 for v in counts.values()):
            raise ValueError(f"class counts must be >= 0, got {counts}")
        unknown = set(self.not_in_differential) - set(counts)
        if unknown:
            raise ValueError(f"not_in_differential names classes without a count: {sorted(unknown)}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "not_in_differential", tuple(self.not_in_differential))

    # ------------------------------------------------------------------ making one
    @classmethod
    def from_classes(cls, class_names, candidate_class, not_in_differential=()) -> Differential:
        """The differential of candidates whose classes are ``candidate_class``.

        Parameters
        ----------
        class_names : sequence of str
            The helper's classes.
        candidate_class : (n,) ndarray of int
            Each candidate's class, an index into ``class_names``.
        not_in_differential : sequence of str

        >>> Differential.from_classes(("a", "b", "c"), np.array([0, 2, 2])).counts
        {'a': 1, 'b': 0, 'c': 2}
        """
        idx = np.asarray(candidate_class, dtype=np.int64).reshape(-1)
        names = tuple(class_names)
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise ValueError(f"candidate classes must index {len(names)} class names, got {idx.min()}..{idx.max()}")
        n = np.bincount(idx, minlength=len(names))
        return cls(dict(zip(names, n.tolist())), tuple(not_in_differential))

    @classmethod
    def empty(cls, config) -> Differential:
        """No cell of any class of ``config``'s multi-class helper (where a sum starts)."""
        return cls({c: 0 for c in config.helper_classes}, tuple(config.helper_not_in_differential))

    @classmethod
    def from_columns(cls, row: dict, config) -> Differential | None:
        """The differential a counts.csv row holds (its ``n_<class>`` fields), or None when the
        model has no multi-class helper or the row lacks them (a failed image)."""
        if not config.multiclass:
            return None
        values = [row.get(class_column(c)) for c in config.helper_classes]
        if any(v is None or v == "" for v in values):
            return None
        return cls(dict(zip(config.helper_classes, map(int, values))), tuple(config.helper_not_in_differential))

    def __add__(self, other: Differential) -> Differential:
        """Counts of two images or blocks together (the same classes)."""
        if not isinstance(other, Differential):
            return NotImplemented
        if list(other.counts) != list(self.counts):
            raise ValueError(f"cannot add differentials of other classes: {list(self.counts)} and {list(other.counts)}")
        return Differential({k: v + other.counts[k] for k, v in self.counts.items()}, self.not_in_differential)

    # ------------------------------------------------------------------ figures
    @property
    def white_cells(self) -> int:
        """Candidates of the classes in the differential (all but ``not_in_differential``)."""
        return sum(v for k, v in self.counts.items() if k not in self.not_in_differential)

    def percent(self, name: str) -> float | None:
        """Class ``name`` in percent of the white cells; None for a class not in the
        differential, or when there is no white cell."""
        if name not in self.counts:
            raise KeyError(name)
        if name in self.not_in_differential or not self.white_cells:
            return None
        return 100.0 * self.counts[name] / self.white_cells

    # ------------------------------------------------------------------ outputs
    def columns(self) -> dict[str, int]:
        """The counts.csv fields: ``{"n_<class>": count}``."""
        return {class_column(k): v for k, v in self.counts.items()}

    def to_dict(self) -> dict:
        """The JSON object of ``summary.json`` and the web API.

        Returns
        -------
        dict
            ``{"white_cells": int, "not_in_differential": [str, ...],
            "classes": {name: {"count": int, "percent": float or None}, ...}}``;
            percentages with two decimals.
        """
        def pct(name):
            p = self.percent(name)
            return None if p is None else round(p, PERCENT_DECIMALS)

        return {
            "white_cells": self.white_cells,
            "not_in_differential": list(self.not_in_differential),
            "classes": {k: {"count": v, "percent": pct(k)} for k, v in self.counts.items()},
        }

    def line(self) -> str:
        """One line for people: ``White cells: 180 (neutrophil 61.1%, eosinophil 3.3%, ...)``,
        then the classes left out, with their counts."""
        shares = [f"{k} {self.percent(k):.1f}%" for k in self.counts
                  if k not in self.not_in_differential and self.percent(k) is not None]
        text = f"White cells: {self.white_cells}" + (f" ({', '.join(shares)})" if shares else "")
        others = [f"{k} {v}" for k, v in self.counts.items() if k in self.not_in_differential]
        return text + (f"; not white cells: {', '.join(others)}" if others else "")


def differential_of(result, config, keep=None) -> Differential | None:
    """The differential of a detection result's candidates, or None without a multi-class helper.

    Parameters
    ----------
    result : eosdetect.models.predict.Result
    config : eosdetect.models.config.ModelConfig
    keep : (n_candidates,) ndarray of bool, optional
        Only these candidates (a slide block's core).

    Returns
    -------
    Differential or None
    """
    if not config.multiclass or result.candidate_class is None:
        return None
    classes = result.candidate_class if keep is None else result.candidate_class[np.asarray(keep)]
    return Differential.from_classes(result.class_names, classes, config.helper_not_in_differential)
