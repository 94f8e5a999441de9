"""Which modality a file or node name denotes: the one naming rule of the engine and the Slicer module.

Recognised (case-insensitive; a file name may keep its suffix, ``.nii.gz`` and the like split off
as tokens that name nothing):

* BraTS 2021 files: ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``;
* BraTS 2023+ files: ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``;
* Slicer node names and common spellings: ``T1w``, ``T1Gd``, ``T1post``, ``T1 ce``, ``T1-c``,
  ``T2w``, ``T2FLAIR``, ``T2-FLAIR``, ``FLAIR``, ``label``, ``labels``, ``segmentation``.

The rule, in order:

1. the name is split into tokens at ``_``, ``-``, ``.`` and white space; the tokens are tried
   last first (the modality is a suffix in both BraTS layouts), each joined with the token before
   it when that is ``t1`` (``T1 ce`` is ``t1ce``), then alone, against :data:`ALIASES`;
2. failing that, the patterns of :data:`PATTERNS` are searched in the whole name, in their order
   (segmentation, T1ce, FLAIR, T2, T1; so ``t1ce`` wins over ``t1``, ``t2flair`` is FLAIR), where
   ``t1``/``t2`` may not be followed by a digit and ``t1c``/``t2f`` by a letter or digit
   (``T2FSE`` is T2, ``T1cor`` is T1).

Standard library only: the Slicer module imports this before torch is installed.
"""

from __future__ import annotations

import re

#: The role of a segmentation (label map) file, next to the four modality names of :data:`nslfcore.MODALITIES`.
SEGMENTATION = "seg"

#: Exact (lower-case) tokens per role.
ALIASES: dict[str, str] = {
    alias: role
    for role, aliases in (
        (SEGMENTATION, ("seg", "label", "labels", "segmentation")),
        ("t1ce", ("t1ce", "t1c", "t1gd", "t1post")),
        ("flair", ("flair", "t2f", "t2flair")),
        ("t2", ("t2", "t2w")),
        ("t1", ("t1", "t1n", "t1w")),
    )
    for alias in aliases
}

#: The file-name suffix of each role in BraTS 2023+ releases (``<case>-t1n.nii.gz``).
BRATS2023_SUFFIXES: dict[str, str] = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", SEGMENTATION: "seg"}

#: Where the name is cut into tokens.
SEPARATORS = re.compile(r"[-_.\s]+")

#: Searched in the whole lower-case name, in this order, when no token is an alias.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (SEGMENTATION, re.compile(r"seg|label")),
    ("t1ce", re.compile(r"t1[-_.\s]?(?:ce|gd|post|c(?![a-z0-9]))")),
    ("flair", re.compile(r"flair|t2f(?![a-z0-9])")),
    ("t2", re.compile(r"t2(?![0-9])")),
    ("t1", re.compile(r"t1(?![0-9])")),
)


def modality_of(name: str) -> str | None:
    """The role a file or node name denotes: ``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``, ``"seg"``, or ``None``.

    Example::

        >>> [modality_of(n) for n in ("BraTS2021_00001_t1ce.nii.gz", "BraTS-GLI-00001-000-t2f", "T1 Gd", "notes")]
        ['t1ce', 'flair', 't1ce', None]
    """
    lower = name.lower()
    tokens = [token for token in SEPARATORS.split(lower) if token]
    for i in reversed(range(len(tokens))):
        joined = "t1" + tokens[i] if i and tokens[i - 1] == "t1" else None
        for candidate in (joined, tokens[i]):
            if candidate in ALIASES:
                return ALIASES[candidate]
    for role, pattern in PATTERNS:
        if pattern.search(lower):
            return role
    return None
