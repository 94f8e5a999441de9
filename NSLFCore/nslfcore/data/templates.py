"""Where the MNI ICBM152 2009 template files are (torch-free: the atlas step of preprocessing reads them too)."""

from __future__ import annotations

from pathlib import Path

#: Environment variable naming another folder that holds :data:`TEMPLATE_FILES`.
TEMPLATE_DIR_ENV = "NSLF_MNI_TEMPLATE_DIR"
#: The copy shipped with the package.
PACKAGED_TEMPLATE_DIR = Path(__file__).resolve().parent / "mni152"

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
