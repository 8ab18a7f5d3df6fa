"""The two-branch multi-scale attention fusion network (the seed paper's design, built for CPUs).

An MRI branch and a PET branch (separate weights) each encode their slice at several scales. At every
scale an :class:`AttentionFusion` block concatenates the two feature maps and learns a per-pixel
softmax weight for each modality, so PET can dominate where metabolism is high and MRI where anatomy
is detailed. A decoder merges the fused maps from the coarsest scale up.

Speed on a CPU comes from never convolving at full resolution: each input is first rearranged
losslessly into four half-resolution channels (pixel unshuffle: every 2x2 block becomes one pixel
with four values) and the whole network runs at half resolution and below. The head (a convolution
over the finest fused features and both rearranged inputs) gives, for each of the four pixels of a
2x2 block, a weight for the MRI, one for the PET, one for their pixel-wise maximum and an offset;
rearranged back to full resolution (pixel shuffle) they make the output
``w_mri * MRI + w_pet * PET + w_max * max(MRI, PET) + offset``. So the full-resolution detail of the
sources reaches the output directly, with per-pixel weights: a per-pixel attention at full resolution
that costs almost nothing. The maximum is the one non-linear source: with it, constant weights already
let the hotter source through wherever it is hotter (a hot sphere on mid-grey anatomy keeps its
contrast) while the output still rises with the PET everywhere, so the network need not vary its
weights with the surroundings to show hot uptake, which drew uniform lesions with a bright rim
(model card, "The bright rim"). The result is gated to exactly 0 where both inputs are black (a haze
or halo there would only add noise to the background).

Input and output are ``(N, 1, H, W)`` float32 tensors; H and W must be multiples of :attr:`FusionNet.stride`
(:mod:`medfuse.inference` pads and crops). The output is not clamped here: training sees the raw
values, inference clamps to [0, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_CHANNELS = (8, 16, 32, 64)
# Inputs below half an 8-bit grey level count as black: where both are black the output is exactly 0.
BLACK_LEVEL = 0.5 / 255.0
# The head's maps per output pixel, in their order: the weights of the MRI, the PET and their maximum, and an offset.
HEAD_MAP_NAMES = ("w_mri", "w_pet", "w_max", "offset")
HEAD_MAPS = len(HEAD_MAP_NAMES)
# Each input becomes UNSHUFFLE**2 channels at 1/UNSHUFFLE of the resolution before the first convolution.
UNSHUFFLE = 2


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution + LeakyReLU, the network's basic unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


class Branch(nn.Module):
    """One modality's encoder: a feature map per scale, from half resolution down, each half the one before."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        stages = [nn.Sequential(_conv(UNSHUFFLE**2, channels[0]), _conv(channels[0], channels[0]))]
        for previous, current in itertools.pairwise(channels):
            stages.append(nn.Sequential(_conv(previous, current, stride=2), _conv(current, current)))
        self.stages = nn.ModuleList(stages)

    def forward(self, unshuffled: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = unshuffled
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class AttentionFusion(nn.Module):
    """Fuse two same-scale feature maps by concatenation plus learned per-pixel modality weights.

    ``weights = softmax(conv(concat(mri, pet)))`` gives two maps summing to one at every pixel; the
    output is the weighted sum of the two feature maps plus a 1x1 projection of their weighted
    concatenation (so the block can also mix channels across modalities).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Conv2d(2 * channels, 2, 3, padding=1)
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def modality_weights(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights ``(N, 2, H, W)``: channel 0 for the MRI, channel 1 for the PET."""
        return torch.softmax(self.attention(torch.cat((mri, pet), dim=1)), dim=1)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        weights = self.modality_weights(mri, pet)
        weighted_mri = mri * weights[:, 0:1]
        weighted_pet = pet * weights[:, 1:2]
        merged = self.merge(torch.cat((weighted_mri, weighted_pet), dim=1))
        return F.leaky_relu(weighted_mri + weighted_pet + merged, 0.1)


class FusionNet(nn.Module):
    """MRI + PET luminance in, fused luminance out; see the module docstring for the layout."""

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        if len(channels) < 3:
            raise ValueError("FusionNet needs at least three scales")
        self.channels = tuple(int(c) for c in channels)
        self.mri_branch = Branch(self.channels)
        self.pet_branch = Branch(self.channels)
        self.fusions = nn.ModuleList(AttentionFusion(c) for c in self.channels)
        # Decoder: a 1x1 projection brings the coarser map to the finer width before upsampling,
        # then a 3x3 convolution refines the sum with that scale's fused features.
        self.lateral = nn.ModuleList(nn.Conv2d(coarse, fine, 1) for fine, coarse in itertools.pairwise(self.channels))
        self.refine = nn.ModuleList(_conv(c, c) for c in self.channels[:-1])
        # The head sees the finest fused features and both rearranged inputs; for each pixel of a 2x2 block it
        # gives the weights of the MRI, of the PET and of their maximum and an offset (HEAD_MAPS maps,
        # rearranged to full resolution).
        self.head = nn.Conv2d(self.channels[0] + 2 * UNSHUFFLE**2, HEAD_MAPS * UNSHUFFLE**2, 3, padding=1)
        # start halfway between the mean and the maximum of the two sources
        self.head.bias = nn.Parameter(torch.tensor([0.25, 0.25, 0.5, 0.0]).repeat_interleave(UNSHUFFLE**2))

    @property
    def stride(self) -> int:
        """H and W must be multiples of this (the total downsampling factor)."""
        return UNSHUFFLE * 2 ** (len(self.channels) - 1)

    def fused_features(self, mri: torch.Tensor, pet: torch.Tensor) -> list[torch.Tensor]:
        """The attention-fused feature map at every scale, finest (half resolution) first."""
        mri_half, pet_half = F.pixel_unshuffle(mri, UNSHUFFLE), F.pixel_unshuffle(pet, UNSHUFFLE)
        return self._fuse_scales(mri_half, pet_half)

    def _fuse_scales(self, mri_half: torch.Tensor, pet_half: torch.Tensor) -> list[torch.Tensor]:
        return _fuse_scales(self, mri_half, pet_half)

    def source_weights(self, mri: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The head's full-resolution maps: the weights of the MRI, the PET and their maximum, and the offset
        (each (N, 1, H, W))."""
        mri_half, pet_half = F.pixel_unshuffle(mri, UNSHUFFLE), F.pixel_unshuffle(pet, UNSHUFFLE)
        x = _decode(self, self._fuse_scales(mri_half, pet_half))
        return F.pixel_shuffle(self.head(torch.cat((x, mri_half, pet_half), dim=1)), UNSHUFFLE).split(1, dim=1)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        return _combine(self.source_weights(mri, pet), mri, pet) * self.support(mri, pet)

    @staticmethod
    def support(mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """1 where either source shows something, 0 where both are black (no haze, no halo there)."""
        return (torch.maximum(mri, pet) > BLACK_LEVEL).to(mri.dtype)

    def for_inference(self) -> InferenceNet:
        """The same function in fewer, cheaper operations (:class:`InferenceNet`), for running, not training."""
        return InferenceNet(self).eval()


class SigmoidAttentionFusion(nn.Module):
    """:class:`AttentionFusion` rewritten for inference: the same output to float rounding, fewer operations.

    A softmax over two logits is the sigmoid of their difference, so one attention map ``w`` (a
    convolution whose weights are the difference of the two logits' weights) is the MRI's weight and
    ``1 - w`` the PET's. The sum of the weighted maps joins the merge convolution as an identity per
    modality, which leaves one convolution and its activation (fused by ONNX Runtime).
    """

    def __init__(self, block: AttentionFusion) -> None:
        super().__init__()
        channels = block.merge.out_channels
        logits_weight, logits_bias = block.attention.weight.detach(), _bias(block.attention)
        self.attention = nn.Conv2d(2 * channels, 1, 3, padding=1)
        self.attention.weight = nn.Parameter(logits_weight[0:1] - logits_weight[1:2], requires_grad=False)
        self.attention.bias = nn.Parameter(logits_bias[0:1] - logits_bias[1:2], requires_grad=False)
        identity = torch.eye(channels)[:, :, None, None]
        self.merge = nn.Conv2d(2 * channels, channels, 1)
        self.merge.weight = nn.Parameter(
            block.merge.weight.detach() + torch.cat((identity, identity), dim=1), requires_grad=False
        )
        self.merge.bias = nn.Parameter(_bias(block.merge).clone(), requires_grad=False)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        mri_weight = torch.sigmoid(self.attention(torch.cat((mri, pet), dim=1)))
        weighted_pet = pet - pet * mri_weight
        return F.leaky_relu(self.merge(torch.cat((mri * mri_weight, weighted_pet), dim=1)), 0.1)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        raise ValueError("the fusion network's convolutions all have a bias")
    return conv.bias.detach()


class InferenceNet(nn.Module):
    """A trained :class:`FusionNet` as it runs (``FusionNet.for_inference``): same parameters, same output.

    Besides :class:`SigmoidAttentionFusion` at every scale, the pixel unshuffle is a strided convolution
    with one-hot kernels (exact: it only copies values, and it avoids a six-dimensional transpose),
    the head's per-pixel weights are applied at half resolution, so a single pixel shuffle of one
    channel per block position ends the network instead of a shuffle of all four maps, and the decoder
    upsamples by a factor of 2 (sizes are multiples of the stride here). On a 256x256
    slice with ONNX Runtime (one thread) this is about 12 % faster than the training form; the largest
    difference of the outputs is float rounding (below 1e-6, checked by the tests).
    """

    unshuffle_kernel: torch.Tensor

    def __init__(self, trained: FusionNet) -> None:
        super().__init__()
        self.stride = trained.stride
        self.mri_branch, self.pet_branch = trained.mri_branch, trained.pet_branch
        self.fusions = nn.ModuleList(SigmoidAttentionFusion(cast(AttentionFusion, b)) for b in trained.fusions)
        self.lateral, self.refine, self.head = trained.lateral, trained.refine, trained.head
        blocks = torch.zeros(UNSHUFFLE**2, 1, UNSHUFFLE, UNSHUFFLE)
        for row, column in itertools.product(range(UNSHUFFLE), repeat=2):
            blocks[row * UNSHUFFLE + column, 0, row, column] = 1.0  # pixel_unshuffle's channel order
        self.register_buffer("unshuffle_kernel", blocks)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        kernel = self.unshuffle_kernel
        mri_half, pet_half = F.conv2d(mri, kernel, stride=UNSHUFFLE), F.conv2d(pet, kernel, stride=UNSHUFFLE)
        x = _decode(self, _fuse_scales(self, mri_half, pet_half), doubling=True)
        maps = self.head(torch.cat((x, mri_half, pet_half), dim=1)).split(UNSHUFFLE**2, dim=1)
        support = FusionNet.support(mri_half, pet_half)
        return F.pixel_shuffle(_combine(maps, mri_half, pet_half) * support, UNSHUFFLE)


def _combine(maps: Sequence[torch.Tensor], mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
    """``w_mri * MRI + w_pet * PET + w_max * max(MRI, PET) + offset`` from the head's maps (in that order)."""
    mri_weight, pet_weight, max_weight, offset = maps
    return mri_weight * mri + pet_weight * pet + max_weight * torch.maximum(mri, pet) + offset


def _fuse_scales(net: FusionNet | InferenceNet, mri_half: torch.Tensor, pet_half: torch.Tensor) -> list[torch.Tensor]:
    """Both branches' features, fused by ``net``'s attention blocks, at every scale (finest first)."""
    branches = zip(net.fusions, net.mri_branch(mri_half), net.pet_branch(pet_half), strict=True)
    return [fusion(mri_features, pet_features) for fusion, mri_features, pet_features in branches]


def _decode(net: FusionNet | InferenceNet, fused: list[torch.Tensor], doubling: bool = False) -> torch.Tensor:
    """``net``'s decoder: from the coarsest fused map up, each projected, upsampled and refined with the next.

    The training form upsamples to each scale's size (any input size works). With ``doubling`` (the
    inference form, whose sizes are multiples of the stride) every scale is exactly twice the next, and
    upsampling by a factor of 2 computes the same while leaving ONNX Runtime no shape to read: it then
    keeps the maps in its blocked layout (5 % faster on a 256x256 slice, outputs within 2e-7).
    """
    x = fused[-1]
    for level in range(len(fused) - 2, -1, -1):
        coarse = net.lateral[level](x)
        if doubling:
            x = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(coarse, size=fused[level].shape[-2:], mode="bilinear", align_corners=False)
        x = net.refine[level](x + fused[level])
    return x


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
