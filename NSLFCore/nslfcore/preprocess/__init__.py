"""Raw exams to model inputs (issue 32): orientation, co-registration, ... (SimpleITK only, as Slicer bundles it).

Modules (one job each):

* :mod:`~nslfcore.preprocess.orientation` -- :func:`to_lps` (axis order and signs of an LPS-aligned
  grid, physical positions kept), :func:`resample_like` (one image onto another's grid);
* :mod:`~nslfcore.preprocess.registration` -- :func:`register_rigid` (mutual information,
  multi-resolution, :class:`RegistrationResult`, :class:`RegistrationError`), :func:`coregister`
  (every sequence onto the reference's grid, :class:`Coregistration`).

Images are ``SimpleITK.Image`` (geometry ``(x, y, z)``, mm, LPS); an array taken from one with
``sitk.GetArrayFromImage`` is ``(z, y, x)``.
"""

from __future__ import annotations

from nslfcore.preprocess.orientation import resample_like, to_lps
from nslfcore.preprocess.registration import (
    Coregistration,
    RegistrationError,
    RegistrationResult,
    coregister,
    register_rigid,
)

__all__ = ["Coregistration", "RegistrationError", "RegistrationResult", "coregister", "register_rigid", "resample_like", "to_lps"]
