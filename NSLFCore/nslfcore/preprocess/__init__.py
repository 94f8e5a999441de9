"""Raw exams to model inputs (issue 32): orientation, co-registration, ... (SimpleITK only, as Slicer bundles it).

Modules (one job each):

* :mod:`~nslfcore.preprocess.orientation` -- :func:`to_lps` (axis order and signs of an LPS-aligned
  grid, physical positions kept), :func:`resample_like` (one image onto another's grid);
* :mod:`~nslfcore.preprocess.registration` -- :func:`register_rigid` (mutual information,
  multi-resolution, :class:`RegistrationResult`, :class:`RegistrationError`), :func:`coregister`
  (every sequence onto the reference's grid, :class:`Coregistration`);
* :mod:`~nslfcore.preprocess.atlas` -- :func:`atlas_reference` (the MNI152 T1 template on the phantoms'
  BraTS grid), :func:`register_to_atlas` (rigid then affine, :class:`AtlasAlignment`), :func:`to_atlas`,
  :func:`from_atlas` (labels by nearest neighbour and the fused volume back onto the native grid).

Images are ``SimpleITK.Image`` (geometry ``(x, y, z)``, mm, LPS); an array taken from one with
``sitk.GetArrayFromImage`` is ``(z, y, x)``.
"""

from __future__ import annotations

from nslfcore.preprocess.atlas import AtlasAlignment, atlas_reference, from_atlas, register_to_atlas, to_atlas
from nslfcore.preprocess.orientation import resample_like, to_lps
from nslfcore.preprocess.registration import (
    Coregistration,
    RegistrationError,
    RegistrationResult,
    coregister,
    register_rigid,
)

__all__ = [
    "AtlasAlignment",
    "Coregistration",
    "RegistrationError",
    "RegistrationResult",
    "atlas_reference",
    "coregister",
    "from_atlas",
    "register_rigid",
    "register_to_atlas",
    "resample_like",
    "to_atlas",
    "to_lps",
]
