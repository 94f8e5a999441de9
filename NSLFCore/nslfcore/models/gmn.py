"""GMN: the paper's geometric matching network (affine + deformable spatial transformer).

The fused volume's CU-Net features and the sources' features drive two branches:

* **Affine**: concatenate the five global features (four sources + fused), Conv3d 3x3x3 +
  GroupNorm + ReLU to ``w4`` channels, global average pooling and four linear heads:
  rotation (3 angles, clamped to +-pi/9), scale (3, 1 +- 0.25), translation (3, in normalised
  grid units: 1 = half the volume's extent) and shear (6 angles, +-pi/18). The 3x4 matrix
  ``Shear @ Scale @ Rz @ Ry @ Rx | t`` acts on voxel offsets from the volume centre in
  ``(x, y, z)`` order, so rotations are rotations of the voxel grid whatever its shape. It is
  built with differentiable tensor operations (the public code cuts the gradient to the heads
  here; this one does not).
* **Deformable**: the affinely warped fused local feature and the four sources' local features
  (5 x w0 channels) go through Conv3d + GroupNorm + ReLU to ``flow_width`` channels and a Conv3d to a
  3-channel displacement field (DVF, voxel units, channels along ``(z, y, x)``). With several
  ``scales`` (coarse to fine, e.g. ``(2, 1)``) each scale's head sees features average-pooled by its
  factor after warping by the flow found so far; its up-sampled residual is added to the flow
  (the paper's multi-scale alignment; ``(1,)`` is the public code's single scale).

The fused volume is warped by the affine then by the DVF. All heads start at zero, so at
initialisation the GMN is the identity (identity affine, zero displacement).

Tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp
from torch import nn

MAX_ROTATION = math.pi / 9  # rad
MAX_SCALE_CHANGE = 0.25
MAX_SHEAR = math.pi / 18  # rad


class AffineParameters(NamedTuple):
    """Per batch item: ``rotation`` (B, 3) rad about x, y, z; ``scale`` (B, 3) along x, y, z;
    ``translation`` (B, 3) along x, y, z in normalised units; ``shear`` (B, 6) rad
    (xy, xz, yx, yz, zx, zy)."""

    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    shear: torch.Tensor


class GMNOutput(NamedTuple):
    """Attributes:
    warped: ``(B, 1, D, H, W)`` the fused volume warped by the affine then the DVF.
    theta: ``(B, 3, 4)`` the affine in :func:`torch.nn.functional.affine_grid`'s normalised
        ``(x, y, z)`` coordinates (``align_corners=True``).
    dvf: ``(B, 3, D, H, W)`` displacement in voxels along ``(z, y, x)``.
    affine: the :class:`AffineParameters` that built ``theta``.
    """

    warped: torch.Tensor
    theta: torch.Tensor
    dvf: torch.Tensor
    affine: AffineParameters


def affine_voxel_matrix(params: AffineParameters) -> torch.Tensor:
    """``(B, 3, 3)`` linear part ``Shear @ Scale @ Rz @ Ry @ Rx`` acting on ``(x, y, z)`` voxel offsets."""
    rx, ry, rz = params.rotation.unbind(dim=1)
    one, zero = torch.ones_like(rx), torch.zeros_like(rx)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rot_x = mat([[one, zero, zero], [zero, rx.cos(), -rx.sin()], [zero, rx.sin(), rx.cos()]])
    rot_y = mat([[ry.cos(), zero, ry.sin()], [zero, one, zero], [-ry.sin(), zero, ry.cos()]])
    rot_z = mat([[rz.cos(), -rz.sin(), zero], [rz.sin(), rz.cos(), zero], [zero, zero, one]])
    scale = torch.diag_embed(params.scale)
    t = params.shear.tan().unbind(dim=1)
    shear = mat([[one, t[0], t[1]], [t[2], one, t[3]], [t[4], t[5], one]])
    return shear @ scale @ rot_z @ rot_y @ rot_x


def affine_theta(params: AffineParameters, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, 3, 4)`` theta for ``affine_grid(..., align_corners=True)`` on a ``(D, H, W)`` grid.

    The voxel-space matrix is conjugated by the half-extents ``N = diag((W-1)/2, (H-1)/2, (D-1)/2)``
    so that it is applied to voxel offsets, not to normalised coordinates.
    """
    d, h, w = spatial_shape
    half = params.scale.new_tensor([max(w - 1, 1) / 2, max(h - 1, 1) / 2, max(d - 1, 1) / 2])
    linear = affine_voxel_matrix(params) * half.reshape(1, 1, 3) / half.reshape(1, 3, 1)
    return torch.cat((linear, params.translation.unsqueeze(-1)), dim=-1)


def warp_affine(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``image`` ``(B, C, D, H, W)`` with ``theta`` ``(B, 3, 4)`` (trilinear, border padding)."""
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=True)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class GeometricMatchingNetwork(nn.Module):
    """GMN.

    Args:
        global_width: channels of each CU-Net global feature (``w4``).
        local_width: channels of each CU-Net local feature (``w0``).
        num_sources: number of source modalities (4).
        scales: deformable-branch scales, coarse to fine, each dividing the (padded) input size.
        flow_width: hidden channels of each deformable head.
    """

    def __init__(
        self,
        global_width: int,
        local_width: int,
        num_sources: int = 4,
        scales: tuple[int, ...] = (2, 1),
        flow_width: int = 16,
    ) -> None:
        super().__init__()
        n = num_sources + 1
        self.scales = tuple(scales)
        self.affine_features = nn.Sequential(
            nn.Conv3d(n * global_width, global_width, kernel_size=3, padding=1),
            nn.GroupNorm(global_width // 8, global_width),
            nn.ReLU(),
        )
        self.rotation_head = nn.Linear(global_width, 3)
        self.scale_head = nn.Linear(global_width, 3)
        self.translation_head = nn.Linear(global_width, 3)
        self.shear_head = nn.Linear(global_width, 6)
        self.flow_heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(n * local_width, flow_width, kernel_size=3, padding=1),
                nn.GroupNorm(max(flow_width // 8, 1), flow_width),
                nn.ReLU(),
                nn.Conv3d(flow_width, 3, kernel_size=3, padding=1),
            )
            for _ in self.scales
        )
        with warnings.catch_warnings():  # MONAI notes that it falls back to torch's grid_sample
            warnings.simplefilter("ignore", UserWarning)
            self.warp = Warp(mode="bilinear", padding_mode="border")
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the output heads: identity affine and zero displacement."""
        flows = cast(list[nn.Sequential], list(self.flow_heads))  # to a type checker a ModuleList holds Modules
        heads = [self.rotation_head, self.scale_head, self.translation_head, self.shear_head, *(f[-1] for f in flows)]
        for head in heads:
            for parameter in head.parameters():  # weight and bias
                nn.init.zeros_(parameter)

    def predict_affine(self, source_global: torch.Tensor, fused_global: torch.Tensor) -> AffineParameters:
        """Affine parameters from ``(B, M, Cg, d, h, w)`` source and ``(B, 1, Cg, d, h, w)`` fused features."""
        x = torch.cat((source_global, fused_global), dim=1).flatten(1, 2)
        pooled = self.affine_features(x).mean(dim=(2, 3, 4))
        return AffineParameters(
            rotation=self.rotation_head(pooled).clamp(-1, 1) * MAX_ROTATION,
            scale=1 + self.scale_head(pooled).clamp(-1, 1) * MAX_SCALE_CHANGE,
            translation=self.translation_head(pooled),
            shear=self.shear_head(pooled).clamp(-1, 1) * MAX_SHEAR,
        )

    def predict_dvf(self, moved_fused_local: torch.Tensor, source_local: torch.Tensor) -> torch.Tensor:
        """Coarse-to-fine DVF ``(B, 3, D, H, W)`` (voxels, ``(z, y, x)``) from ``(B, Cl, ...)`` and ``(B, M, Cl, ...)``."""
        sources = source_local.flatten(1, 2)
        flow = moved_fused_local.new_zeros(moved_fused_local.shape[0], 3, *moved_fused_local.shape[2:])
        for level, (scale, head) in enumerate(zip(self.scales, self.flow_heads)):
            moving = self.warp(moved_fused_local, flow) if level else moved_fused_local
            x = torch.cat((moving, sources), dim=1)
            if scale > 1:
                x = F.avg_pool3d(x, scale)
            residual = head(x)
            if scale > 1:
                residual = F.interpolate(residual, scale_factor=scale, mode="trilinear", align_corners=False) * scale
            flow = flow + residual
        return flow

    def forward(
        self,
        source_global: torch.Tensor,
        source_local: torch.Tensor,
        fused_global: torch.Tensor,
        fused_local: torch.Tensor,
        fused: torch.Tensor,
    ) -> GMNOutput:
        """Warp ``fused`` ``(B, 1, D, H, W)`` onto the sources.

        Args:
            source_global: ``(B, M, Cg, D/16, H/16, W/16)``.
            source_local: ``(B, M, Cl, D, H, W)``, or on a grid ``s`` times coarser (``feature_stride``):
                the displacements are then found there and up-sampled (times ``s``) to ``fused``'s grid.
            fused_global: ``(B, 1, Cg, D/16, H/16, W/16)`` CU-Net global feature of ``fused``.
            fused_local: ``(B, 1, Cl, D, H, W)`` CU-Net local feature of ``fused``.
            fused: ``(B, 1, D, H, W)``.
        """
        params = self.predict_affine(source_global, fused_global)
        d, h, w = fused.shape[2:]
        theta = affine_theta(params, (d, h, w))
        moved_local = warp_affine(fused_local[:, 0], theta)
        dvf = self.predict_dvf(moved_local, source_local)
        if dvf.shape[2:] != fused.shape[2:]:  # features on a coarser grid (feature_stride > 1)
            factors = [full / coarse for full, coarse in zip(fused.shape[2:], dvf.shape[2:])]
            dvf = F.interpolate(dvf, size=fused.shape[2:], mode="trilinear", align_corners=False)
            dvf = dvf * dvf.new_tensor(factors).reshape(1, 3, 1, 1, 1)  # voxels of the coarse grid -> input voxels
        warped = self.warp(warp_affine(fused, theta), dvf)
        return GMNOutput(warped=warped, theta=theta, dvf=dvf, affine=params)
