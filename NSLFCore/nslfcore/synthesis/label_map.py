"""One synthesis label map from a seed: deformed MNI152 anatomy, look-alike structures and a tumour.

Steps (each random per case): the MNI152 template placed on the BraTS grid with a random affine
and elastic deformation (:func:`nslfcore.data.phantom_anatomy.template_coords`); a tumour type and
its lesions (:mod:`nslfcore.synthesis.tumours`); the mass effect pushing ventricles and midline
away (:func:`nslfcore.data.phantom_tumour.mass_effect_coords`); tissue labels and the look-alike
structures on the pushed anatomy (:mod:`nslfcore.synthesis.anatomy`); the tumour labels on top.

The result is a :class:`SynthesisLabels` on the BraTS grid (240 x 240 x 155, 1 mm, LPS), arrays
``(z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from nslfcore.data.case import Geometry
from nslfcore.data.phantom import brats_geometry, case_rng
from nslfcore.data.phantom_anatomy import template_anatomy, template_coords
from nslfcore.data.phantom_fields import sample
from nslfcore.data.phantom_tumour import mass_effect_coords, tumour_fractions
from nslfcore.synthesis import anatomy
from nslfcore.synthesis import labels as L
from nslfcore.synthesis.tumours import lower_grade_focus, sample_tumour, tumour_labels


@dataclass
class SynthesisLabels:
    """A label map ``(z, y, x)`` uint8 of :mod:`nslfcore.synthesis.labels` values on ``geometry``.

    Attributes:
        labels: the label map.
        geometry: its grid (ITK ``(x, y, z)``, mm, LPS).
        tumour_type: one of :data:`nslfcore.synthesis.tumours.TUMOUR_TYPES`.
        structures: what the case holds beside the tumour (counts, burdens), for figures and checks.
    """

    labels: np.ndarray
    geometry: Geometry
    tumour_type: str
    structures: dict[str, float] = field(default_factory=dict)


def generate_label_map(seed: int, index: int = 0, kind: str | None = None) -> SynthesisLabels:
    """The label map of case ``index`` of a data set generated with ``seed`` (deterministic; numpy + scipy).

    ``kind`` forces a tumour type (default: drawn, :data:`~nslfcore.synthesis.tumours.TYPE_WEIGHTS`).
    """
    rng = case_rng(seed, 10_000_019 + index)  # a stream of its own, apart from the phantoms'
    geometry = brats_geometry()
    coords = template_coords(rng, geometry)
    fractions = template_anatomy(coords)
    kind, lesions = sample_tumour(rng, fractions["wm"], fractions["brain"], kind)
    source = mass_effect_coords(lesions, geometry.shape, (1.0, 1.0, 1.0))
    fractions = template_anatomy(sample(coords, source))
    labels, depth = anatomy.tissue_labels(fractions)
    structures = {
        "choroid_plexus": float(rng.random() < 0.85),
        "vessels": float(rng.integers(0, 40)),
        "wmh_burden": float(rng.choice([0.0, rng.uniform(0.0, 0.4), rng.uniform(0.3, 1.0)], p=[0.3, 0.4, 0.3])),
        "sinus": float(rng.random() < 0.5),
        "residue": float(rng.choice([0.0, rng.uniform(0.05, 0.6)], p=[0.4, 0.6])),
    }
    if structures["choroid_plexus"]:
        anatomy.add_choroid_plexus(rng, labels)
    anatomy.add_white_matter_hyperintensities(rng, labels, structures["wmh_burden"])
    tumour = tumour_fractions(rng, lesions, fractions["wm"], (1.0, 1.0, 1.0))
    focus_lesions = lower_grade_focus(rng, kind, lesions)
    focus = tumour_fractions(rng, focus_lesions, fractions["wm"], (1.0, 1.0, 1.0)) if focus_lesions else None
    parts = tumour_labels(kind, tumour, focus)
    brain = labels > 0
    if kind == "non_enhancing_glioblastoma":  # necrosis deep inside the non-enhancing mass
        inner = ndimage.distance_transform_edt(parts["non_enhancing"]) > rng.uniform(3.0, 8.0)
        parts["necrosis"] |= inner
        parts["non_enhancing"] &= ~inner
    for name, value in (("oedema", L.OEDEMA), ("non_enhancing", L.NON_ENHANCING), ("necrosis", L.NECROSIS),
                        ("enhancing", L.ENHANCING)):  # fmt: skip
        labels[parts[name] & brain] = value
    anatomy.add_vessels(rng, labels, depth, int(structures["vessels"]))  # after the tumour: never through it
    anatomy.add_extracerebral(rng, labels, bool(structures["sinus"]), structures["residue"])
    structures["lesions"] = float(len(lesions) + len(focus_lesions))
    return SynthesisLabels(labels, geometry, kind, structures)
