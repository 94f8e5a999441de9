"""The label set of the synthesis engine: normal anatomy, look-alikes of tumour, and tumour tissues.

A synthesis label map (uint8, ``(z, y, x)``) names the tissue of each voxel; the images are drawn
from it (:mod:`nslfcore.synthesis.intensities`) and the training target is its tumour part
(:func:`target_classes`: the internal classes 0-3 of :mod:`nslfcore.data.labels`).

The normal structures are those that fool a model on real scans: vessels, dural sinuses and the
choroid plexus enhance on T1ce like tumour; periventricular and deep white-matter
hyperintensities (WMH) are bright on FLAIR and T2 like oedema; skull-stripping residue is a rim
of non-brain tissue left by brain extraction.

:data:`ORDERINGS` holds the only intensity relations a radiologist relies on, per sequence; every
other relation between labels is randomised (SynthSeg's lesson: train on every contrast that
keeps the rules, so that no particular scanner's contrast is learnt).
"""

from __future__ import annotations

import numpy as np

from nslfcore.data.labels import ED, ET, NCR

BACKGROUND = 0
CSF = 1  #: sulcal and extra-axial CSF
VENTRICLE = 2
CORTICAL_GM = 3
DEEP_GM = 4  #: basal ganglia and thalami
WM = 5
CHOROID_PLEXUS = 6
VESSEL = 7
SINUS = 8  #: dural venous sinus left by brain extraction
WMH = 9  #: white-matter hyperintensity (periventricular caps and bands, deep punctate lesions)
RESIDUE = 10  #: skull-stripping residue (dura, marrow, scalp fat)
NECROSIS = 11  #: necrotic core (labelled NCR)
NON_ENHANCING = 12  #: solid non-enhancing tumour (labelled NCR)
OEDEMA = 13  #: peritumoural oedema and infiltration (labelled ED)
ENHANCING = 14  #: enhancing tumour (labelled ET)

#: Label names by value.
LABEL_NAMES: tuple[str, ...] = (
    "background", "csf", "ventricle", "cortical_gm", "deep_gm", "wm", "choroid_plexus", "vessel", "sinus",
    "wmh", "residue", "necrosis", "non_enhancing", "oedema", "enhancing",
)  # fmt: skip
NUM_LABELS = len(LABEL_NAMES)

#: Synthesis label -> internal training class (0 background, 1 NCR, 2 ED, 3 ET).
TARGET_CLASS: dict[int, int] = {NECROSIS: NCR, NON_ENHANCING: NCR, OEDEMA: ED, ENHANCING: ET}

#: The relations every synthesised image keeps: ``(sequence, brighter, darker)``; the brighter
#: label's mean is at least ``ORDER_RATIO * darker + ORDER_MARGIN`` (relative units, range about [0, 1]),
#: enough to survive texture, bias field and noise.
ORDERINGS: tuple[tuple[str, int, int], ...] = (
    ("t2", OEDEMA, WM),  # oedema is brighter than white matter on T2 and FLAIR
    ("flair", OEDEMA, WM),
    ("t2", WMH, WM),  # so are white-matter hyperintensities
    ("flair", WMH, WM),
    ("flair", WM, CSF),  # CSF is dark on FLAIR
    ("flair", CORTICAL_GM, CSF),
    ("flair", WM, VENTRICLE),
    ("flair", CORTICAL_GM, VENTRICLE),
    ("t1ce", ENHANCING, WM),  # enhancing tumour is brighter than white matter on T1ce
    ("t1ce", ENHANCING, OEDEMA),
    ("t1ce", ENHANCING, NECROSIS),
    ("t1ce", WM, NECROSIS),  # necrosis is dark on T1ce
    ("t1ce", VESSEL, WM),  # vessels, sinuses and choroid plexus enhance
    ("t1ce", SINUS, WM),
    ("t1ce", CHOROID_PLEXUS, WM),
)
ORDER_RATIO = 1.3
ORDER_MARGIN = 0.05


def target_classes(label_map: np.ndarray) -> np.ndarray:
    """Internal classes (uint8, same shape) of a synthesis label map: tumour labels -> 1-3, the rest 0."""
    lookup = np.zeros(256, np.uint8)
    for label, cls in TARGET_CLASS.items():
        lookup[label] = cls
    return lookup[np.asarray(label_map, dtype=np.uint8)]
