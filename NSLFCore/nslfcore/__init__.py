"""nslfcore: the PyTorch engine of NSLFSlicer.

Implements "A nested self-supervised learning framework for 3-D semantic segmentation-driven
multi-modal medical image fusion" (NSLF, Zhang et al.). The paper's four parts keep their names:
CU-Net (:class:`nslfcore.models.CUNet`), FCD (:class:`nslfcore.models.FusionDecoder`),
GMN (:class:`nslfcore.models.GeometricMatchingNetwork`) and FSD
(:class:`nslfcore.models.SegmentationDecoder`), composed by :class:`nslfcore.models.NSLF`.

This package never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"

#: Canonical modality order of the channel axis of every 4-modality tensor in this package.
#: (The authors' public code stacks (flair, t1ce, t1, t2); :mod:`nslfcore.compat` maps between them.)
MODALITIES: tuple[str, str, str, str] = ("t1", "t1ce", "t2", "flair")
#: Inference needs at least this many of :data:`MODALITIES`; the missing one gets no fusion weight
#: (:mod:`nslfcore.inference.missing`). Here, not there, so the Slicer module reads it without torch.
MIN_SEQUENCES = 3
