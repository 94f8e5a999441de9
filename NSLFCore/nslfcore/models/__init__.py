"""The four NSLF networks, named after the paper, and their composition.

* :class:`CUNet` -- CU-Net, the 3-D U-Net feature extractor (``cunet.py``);
* :class:`FusionDecoder` -- FCD, the fusion convolutional decoder (``fcd.py``; :func:`present_channels`:
  which sequences a batch has, for sequence dropout);
* :class:`GeometricMatchingNetwork` -- GMN, the geometric matching network (``gmn.py``);
* :class:`SegmentationDecoder` -- FSD, the segmentation decoder (``fsd.py``);
* :class:`NSLF` -- all four composed (``nslf.py``);
* :class:`Network` -- the interface inference and model files use (``interface.py``).
"""

from nslfcore.models.cunet import CUNet, CUNetOutput
from nslfcore.models.fcd import FusionDecoder, FusionOutput, present_channels
from nslfcore.models.fsd import SegmentationDecoder
from nslfcore.models.gmn import AffineParameters, GeometricMatchingNetwork, GMNOutput
from nslfcore.models.interface import Network
from nslfcore.models.nslf import NSLF, NSLFOutput, check_input

__all__ = [
    "CUNet",
    "CUNetOutput",
    "FusionDecoder",
    "FusionOutput",
    "SegmentationDecoder",
    "GeometricMatchingNetwork",
    "GMNOutput",
    "AffineParameters",
    "NSLF",
    "Network",
    "NSLFOutput",
    "check_input",
    "present_channels",
]
