"""Loaders for the public data sets the bundled models are trained and scored on.

They expect the layout of the project's ``../shared/data`` folder (see its
README): ``bccd/`` (BCCD blood smears, VOC boxes and white-cell subtypes),
``pbc/`` (single blood cells labelled by clinical pathologists) and
``monuseg/`` (MoNuSeg H&E tissue, binary and instance masks). Splits are fixed
and documented here so that training, evaluation and tests agree.

Pixel sizes: neither BCCD nor PBC publishes one. Both are measured on one
ruler, the red cell (7.5 um across): BCCD's are about 90 px across, PBC's
about 75 px, hence :data:`BCCD_PIXEL_SIZE_UM` and :data:`PBC_PIXEL_SIZE_UM`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eosdetect.annotations.masks import centroids, read_label_image
from eosdetect.annotations.voc import read_voc
from eosdetect.errors import InputError
from eosdetect.io import read_csv

#: Where the shared data is looked for: ``$EOSDETECT_SHARED_DATA`` or ``../shared/data``
#: relative to the project root.
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_root() -> Path:
    env = os.environ.get("EOSDETECT_SHARED_DATA")
    return Path(env) if env else DEFAULT_ROOT


def _stable_order(names: list[str], salt: str) -> list[str]:
    """Deterministic shuffle that does not depend on library versions."""
    return sorted(names, key=lambda n: hashlib.sha1(f"{salt}:{n}".encode()).hexdigest())


#: Diameter of a red cell, the ruler both smear sets are calibrated on (micrometres).
RED_CELL_DIAMETER_UM = 7.5


# --------------------------------------------------------------------------- BCCD

#: BCCD's pixel size on the red-cell ruler (red cells ~90 px across).
BCCD_PIXEL_SIZE_UM = 0.08


@dataclass
class BccdImage:
    name: str
    path: Path
    #: white-cell boxes (xmin, ymin, xmax, ymax), all subtypes, degenerate ones dropped
    wbc_boxes: np.ndarray
    #: red-cell and platelet boxes
    other_boxes: np.ndarray
    #: subtype of the single labelled white cell, or None (then unusable as a negative)
    subtype: str | None
    #: that white cell's box, when ``subtype`` is known
    subtype_box: np.ndarray | None
    fold: int = 0


BCCD_FOLDS = 5


def load_bccd(root: str | os.PathLike | None = None) -> list[BccdImage]:
    """All BCCD images with boxes and subtypes, each assigned to one of 5 folds.

    Folds are stratified by subtype (images without a subtype form their own
    stratum) with a stable hash-based order, so fold 0 holds about a fifth of
    the eosinophils. The bundled model validates on fold 0 and trains on 1-4.
    """
    root = Path(root) if root else shared_root() / "bccd"
    if not (root / "images").is_dir():
        raise InputError(root, "BCCD data not found (expected images/ and annotations/)")
    subtypes = {r["filename"]: r for r in read_csv(root / "wbc_subtypes.csv")}
    out = []
    for img in sorted((root / "images").glob("*.jpg")):
        ann = read_voc(root / "annotations" / f"{img.stem}.xml")
        wbc = [(o.xmin, o.ymin, o.xmax, o.ymax) for o in ann.boxes("WBC")]
        other = [(o.xmin, o.ymin, o.xmax, o.ymax) for o in ann.objects if o.name != "WBC" and not o.is_degenerate]
        row = subtypes.get(img.name)
        out.append(
            BccdImage(
                name=img.name, path=img,
                wbc_boxes=np.array(wbc, dtype=float).reshape(-1, 4),
                other_boxes=np.array(other, dtype=float).reshape(-1, 4),
                subtype=row["subtype"] if row else None,
                subtype_box=np.array([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]) if row else None,
            )
        )
    strata: dict[str, list[BccdImage]] = {}
    for item in out:
        strata.setdefault(item.subtype or "none", []).append(item)
    for key, items in strata.items():
        order = _stable_order([i.name for i in items], f"bccd-{key}")
        rank = {n: k for k, n in enumerate(order)}
        for i in items:
            i.fold = rank[i.name] % BCCD_FOLDS
    return out


def bccd_split(items: list[BccdImage], val_fold: int = 0) -> tuple[list[BccdImage], list[BccdImage]]:
    """Training and validation images for one fold."""
    return [i for i in items if i.fold != val_fold], [i for i in items if i.fold == val_fold]


def bccd_eosinophil_truth(item: BccdImage) -> np.ndarray:
    """True eosinophil boxes of an image (0 or 1 rows)."""
    if item.subtype == "eosinophil":
        return item.subtype_box.reshape(1, 4)
    return np.zeros((0, 4))


# --------------------------------------------------------------------------- PBC

#: PBC's pixel size on the red-cell ruler (red cells ~75 px across).
PBC_PIXEL_SIZE_UM = 0.10
#: Share of each PBC class held out for validation (a stable hash of the file name decides).
PBC_VAL_FRACTION = 0.15


@dataclass
class PbcCell:
    """One PBC image: a single centred cell labelled by clinical pathologists."""

    name: str
    path: Path
    cls: str
    subclass: str
    val: bool = False


def load_pbc(root: str | os.PathLike | None = None) -> list[PbcCell]:
    """Every PBC cell of ``labels.csv``, with a fixed validation split.

    The split takes :data:`PBC_VAL_FRACTION` of each class by a stable hash
    order. PBC has no patient identifiers, so one patient's cells may fall on
    both sides: the validation split is optimistic (judge transfer on BCCD).
    """
    root = Path(root) if root else shared_root() / "pbc"
    if not (root / "labels.csv").is_file():
        raise InputError(root, "PBC data not found (expected labels.csv and images/)")
    cells = [PbcCell(Path(r["filename"]).stem, root / r["filename"], r["class"], r["subclass"])
             for r in read_csv(root / "labels.csv")]
    by_class: dict[str, list[PbcCell]] = {}
    for c in cells:
        by_class.setdefault(c.cls, []).append(c)
    for key, group in by_class.items():
        order = _stable_order([c.name for c in group], f"pbc-{key}")
        n_val = int(round(PBC_VAL_FRACTION * len(group)))
        val = set(order[:n_val])
        for c in group:
            c.val = c.name in val
    return cells


# --------------------------------------------------------------------------- MoNuSeg

#: Instance-annotated MoNuSeg images held out for validation: one per organ
#: group (lung, breast, kidney, prostate, colon).
MONUSEG_VAL = (
    "TCGA-21-5786-01Z-00-DX1",
    "TCGA-AR-A1AS-01Z-00-DX1",
    "TCGA-B0-5710-01Z-00-DX1",
    "TCGA-G9-6362-01Z-00-DX1",
    "TCGA-NH-A8F7-01A-01-TS1",
)
MONUSEG_PIXEL_SIZE_UM = 0.25


@dataclass
class MonusegImage:
    name: str
    path: Path
    mask_path: Path
    instance_path: Path | None

    def instances(self) -> np.ndarray | None:
        return read_label_image(self.instance_path) if self.instance_path else None

    def binary(self) -> np.ndarray:
        return read_label_image(self.mask_path) > 0

    def true_centroids(self) -> np.ndarray:
        """Nucleus centres (x, y) from the instance image."""
        csv_path = self.instance_path.with_name(f"{self.name}_centroids.csv") if self.instance_path else None
        if csv_path is not None and csv_path.is_file():
            rows = read_csv(csv_path)
            return np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(-1, 2)
        return centroids(self.instances())


def load_monuseg(root: str | os.PathLike | None = None) -> list[MonusegImage]:
    root = Path(root) if root else shared_root() / "monuseg"
    if not (root / "images").is_dir():
        raise InputError(root, "MoNuSeg data not found (expected images/ and masks_binary/)")
    out = []
    for img in sorted((root / "images").glob("*.png")):
        inst = root / "instances" / f"{img.stem}.png"
        out.append(MonusegImage(img.stem, img, root / "masks_binary" / img.name, inst if inst.is_file() else None))
    return out


def monuseg_split(items: list[MonusegImage]) -> tuple[list[MonusegImage], list[MonusegImage]]:
    return [i for i in items if i.name not in MONUSEG_VAL], [i for i in items if i.name in MONUSEG_VAL]
