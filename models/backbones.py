"""Video backbones: torchvision's R(2+1)D-18, R3D-18, MC3-18 and S3D with RGB or flow stems.

Every backbone maps a clip ``[B, C, T, H, W] float32`` to a feature map ``[B, D, T', H', W'] float32``
(no pooling, no classifier) and exposes ``out_features`` (D) and ``blocks()``, its four resolution
stages used to freeze the early layers when fine-tuning.

The three 18-layer residual networks are assembled from torchvision's own blocks (``BasicBlock``,
``Conv2Plus1D``, ``Conv3DSimple``, ``Conv3DNoTemporal``) with torchvision's layout and initialisation,
so that at width multiplier 1 and layers (2, 2, 2, 2) a backbone is torchvision's network without its
pooling and ``fc`` (parameter names included: torchvision state dicts load into it). The width
multiplier scales every width (stem 64 and the R(2+1)D stem's 45 mid-planes included, stage widths
64-128-256-512): 1/4 gives CMPL's lower-capacity auxiliary 3D-ResNet, 1/8 tiny CPU models. Nothing is
ever downloaded: all weights start from torchvision's random initialisation.
"""

from collections.abc import Sequence

import torchvision
from torch import Tensor, nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple

ARCHITECTURES = ("r2plus1d_18", "r3d_18", "mc3_18", "s3d")

RESNET_STAGE_WIDTHS = (64, 128, 256, 512)
"""Channel widths of conv2_x .. conv5_x in the 18-layer video ResNets (Tran et al. 2018)."""

RESNET_18_LAYERS = (2, 2, 2, 2)
"""Residual blocks per stage of the 18-layer video ResNets."""

R2PLUS1D_STEM_MIDPLANES = 45
"""Channels between the spatial and temporal convolutions of torchvision's R(2+1)D stem."""

S3D_OUT_FEATURES = 1024

ConvBuilder = type[Conv3DSimple] | type[Conv2Plus1D] | type[Conv3DNoTemporal]

_STAGE_CONVS: dict[str, tuple[ConvBuilder, ...]] = {
    "r2plus1d_18": (Conv2Plus1D,) * 4,
    "r3d_18": (Conv3DSimple,) * 4,
    "mc3_18": (Conv3DSimple,) + (Conv3DNoTemporal,) * 3,
}


def scaled_width(width: int, width_multiplier: float) -> int:
    """Channel count ``width * width_multiplier`` rounded to the nearest integer, at least 1."""
    return max(1, round(width * width_multiplier))


def _check_clip(x: Tensor, in_channels: int) -> None:
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(
            f"clip must have shape [B, {in_channels}, T, H, W] for this backbone, got {tuple(x.shape)}"
        )


def _basic_stem(in_channels: int, width: int) -> nn.Sequential:
    """R3D/MC3 stem: one 3x7x7 convolution, spatial stride 2 (torchvision's ``BasicStem`` layout)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _r2plus1d_stem(in_channels: int, width: int, midplanes: int) -> nn.Sequential:
    """R(2+1)D stem: 1x7x7 spatial then 3x1x1 temporal convolution (torchvision's ``R2Plus1dStem``)."""
    return nn.Sequential(
        nn.Conv3d(
            in_channels, midplanes, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False
        ),
        nn.BatchNorm3d(midplanes),
        nn.ReLU(inplace=True),
        nn.Conv3d(midplanes, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _residual_stage(
    conv_builder: ConvBuilder, in_planes: int, planes: int, n_blocks: int, stride: int
) -> nn.Sequential:
    """``n_blocks`` torchvision ``BasicBlock``s; the first one downsamples by ``stride`` when needed."""
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(
                in_planes,
                planes,
                kernel_size=1,
                stride=conv_builder.get_downsample_stride(stride),
                bias=False,
            ),
            nn.BatchNorm3d(planes),
        )
    blocks = [BasicBlock(in_planes, planes, conv_builder, stride, downsample)]
    blocks += [BasicBlock(planes, planes, conv_builder) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's ``VideoResNet`` initialisation: Kaiming-normal (fan-out) convolutions, BN 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VideoResNetBackbone(nn.Module):
    """18-layer video ResNet without pooling and classifier: ``stem`` (conv1), ``layer1`` .. ``layer4``
    (conv2_x .. conv5_x).

    Blocks for fine-tuning (``blocks()``): block 1 = stem + layer1 (conv1 + conv2_x, MotionFit's
    "block 1"), block k = layer k for k = 2, 3, 4.
    """

    def __init__(
        self,
        arch: str,
        in_channels: int = 3,
        width_multiplier: float = 1.0,
        layers: Sequence[int] = RESNET_18_LAYERS,
    ) -> None:
        super().__init__()
        if arch not in _STAGE_CONVS:
            raise ValueError(f"arch must be one of {sorted(_STAGE_CONVS)} for a video ResNet, got {arch!r}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {tuple(layers)}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        widths = [scaled_width(w, width_multiplier) for w in RESNET_STAGE_WIDTHS]
        if arch == "r2plus1d_18":
            midplanes = scaled_width(R2PLUS1D_STEM_MIDPLANES, width_multiplier)
            self.stem = _r2plus1d_stem(in_channels, widths[0], midplanes)
        else:
            self.stem = _basic_stem(in_channels, widths[0])
        convs = _STAGE_CONVS[arch]
        in_planes = widths[0]
        stages = []
        for index, (conv, planes, n_blocks) in enumerate(zip(convs, widths, layers, strict=True)):
            stages.append(_residual_stage(conv, in_planes, planes, n_blocks, stride=1 if index == 0 else 2))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.in_channels = in_channels
        self.out_features = widths[-1]
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, D, T/8, H/16, W/16]`` (R3D/R(2+1)D; MC3 keeps T' = T)."""
        _check_clip(x, self.in_channels)
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def blocks(self) -> list[nn.Module]:
        """The four fine-tuning blocks, earliest first (see the class docstring)."""
        return [nn.Sequential(self.stem, self.layer1), self.layer2, self.layer3, self.layer4]


class S3DBackbone(nn.Module):
    """torchvision's S3D (Xie et al. 2018) ``features`` without its pooling and classifier.

    Blocks for fine-tuning (``blocks()``), by output stride like the ResNets' stages: block 1 =
    conv1 .. conv2c (``features[0:4]``, stride 4), block 2 = pool + mixed_3b/3c (``features[4:7]``),
    block 3 = pool + mixed_4b .. 4f (``features[7:13]``), block 4 = pool + mixed_5b/5c
    (``features[13:16]``).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.features = torchvision.models.video.s3d(weights=None).features
        if in_channels != 3:
            first = self.features[0][0][0]
            self.features[0][0][0] = nn.Conv3d(
                in_channels,
                first.out_channels,
                kernel_size=first.kernel_size,
                stride=first.stride,
                padding=first.padding,
                bias=False,
            )
        self.in_channels = in_channels
        self.out_features = S3D_OUT_FEATURES

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, 1024, T/8, H/32, W/32]`` (rounded up)."""
        _check_clip(x, self.in_channels)
        return self.features(x)

    def blocks(self) -> list[nn.Module]:
        """The four fine-tuning blocks, earliest first (see the class docstring)."""
        return [self.features[0:4], self.features[4:7], self.features[7:13], self.features[13:16]]


Backbone = VideoResNetBackbone | S3DBackbone


def _build_s3d(in_channels: int, width_multiplier: float, layers: Sequence[int] | None) -> S3DBackbone:
    if width_multiplier != 1.0 or layers is not None:
        raise ValueError(
            "s3d is available at its published size only: width_multiplier must be 1.0 and layers None, "
            f"got width_multiplier={width_multiplier}, layers={layers}; use r3d_18/r2plus1d_18/mc3_18 "
            "for reduced models"
        )
    return S3DBackbone(in_channels)


def build_backbone(
    arch: str,
    in_channels: int = 3,
    width_multiplier: float = 1.0,
    layers: tuple[int, ...] | None = None,
) -> Backbone:
    """Build a randomly initialised video backbone.

    Args:
        arch: one of ``ARCHITECTURES``.
        in_channels: 3 for RGB clips, 2 for optical flow (x, y); replaces the stem's first convolution.
        width_multiplier: scales every channel width of a video ResNet (1/4: CMPL's auxiliary network).
        layers: residual blocks per stage of a video ResNet (default (2, 2, 2, 2); (1, 1, 1, 1) for tiny
            models).

    Returns:
        A module mapping ``[B, in_channels, T, H, W] float32`` to ``[B, D, T', H', W'] float32`` with
        ``out_features == D``.
    """
    if arch == "s3d":
        return _build_s3d(in_channels, width_multiplier, layers)
    if arch in _STAGE_CONVS:
        return VideoResNetBackbone(
            arch, in_channels, width_multiplier, RESNET_18_LAYERS if layers is None else layers
        )
    raise ValueError(f"unknown backbone arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
