"""The colours of cell classes, one palette for overlays and exported outlines.

The counted class is green, cells not counted a light grey, and the usual
white-cell classes have fixed colours from Okabe & Ito's colour-blind-safe
palette (:func:`class_colours`).
"""

from __future__ import annotations

from collections.abc import Sequence

COUNTED = (0, 230, 64)  # RGB
REJECTED = (235, 235, 235)
#: Okabe & Ito's colour-blind-safe palette (RGB), black left out (it is the outlines' rim).
OKABE_ITO = {
    "blue": (0, 114, 178), "orange": (230, 159, 0), "reddish purple": (204, 121, 167),
    "vermillion": (213, 94, 0), "sky blue": (86, 180, 233), "yellow": (240, 228, 66),
    "bluish green": (0, 158, 115),
}
#: Colours of the usual white-blood-cell classes; other names take the palette's colours left over, in order.
CLASS_COLOURS = {
    "neutrophil": OKABE_ITO["blue"], "lymphocyte": OKABE_ITO["orange"], "monocyte": OKABE_ITO["reddish purple"],
    "basophil": OKABE_ITO["vermillion"], "ig": OKABE_ITO["sky blue"], "erythroblast": OKABE_ITO["yellow"],
    "platelet": OKABE_ITO["bluish green"], "other": REJECTED,
}


def class_colours(class_names: Sequence[str], counted: str) -> dict[str, tuple[int, int, int]]:
    """The outline colour of each class of a multi-class helper.

    The counted class is green (:data:`COUNTED`), ``other`` the grey of cells
    not counted, the usual white-cell classes have fixed colours
    (:data:`CLASS_COLOURS`), and any other name takes the Okabe-Ito colours
    not yet used, in order (then cycles through them).

    >>> class_colours(["eosinophil", "neutrophil", "other", "blast"], "eosinophil")
    {'eosinophil': (0, 230, 64), 'neutrophil': (0, 114, 178), 'other': (235, 235, 235), 'blast': (230, 159, 0)}
    """
    fixed = {name: CLASS_COLOURS[name] for name in class_names if name in CLASS_COLOURS and name != counted}
    spare = [c for c in OKABE_ITO.values() if c not in fixed.values()] or list(OKABE_ITO.values())
    out, k = {}, 0
    for name in class_names:
        if name == counted:
            out[name] = COUNTED
        elif name in fixed:
            out[name] = fixed[name]
        else:
            out[name] = spare[k % len(spare)]
            k += 1
    return out
