"""Backbones: shapes for RGB and flow stems, identity with torchvision's networks, width scaling."""

import pytest
import torch
import torchvision

from motionfit.models.backbones import ARCHITECTURES, build_backbone

RESNETS = ("r2plus1d_18", "r3d_18", "mc3_18")
TINY = {"width_multiplier": 1 / 8, "layers": (1, 1, 1, 1)}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_channels", [3, 2])
@pytest.mark.parametrize("arch", RESNETS)
def test_tiny_resnet_output_shape(arch: str, in_channels: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(arch, in_channels, **TINY)
    out = backbone(torch.randn(2, in_channels, 8, 32, 32))
    # R3D and R(2+1)D downsample time by 8 and space by 16; MC3 keeps time (2D convolutions after conv2).
    expected_time = 8 if arch == "mc3_18" else 1
    assert backbone.out_features == 64
    assert out.shape == (2, 64, expected_time, 2, 2)


@pytest.mark.parametrize("in_channels", [3, 2])
def test_s3d_output_shape_and_parameters(in_channels: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("s3d", in_channels)
    out = backbone(torch.randn(2, in_channels, 8, 32, 32))
    assert backbone.out_features == 1024
    assert out.shape == (2, 1024, 1, 1, 1)
    reference = torchvision.models.video.s3d(weights=None)
    first_conv_weights = 64 * 7 * 7
    expected = n_params(reference.features) - (3 - in_channels) * first_conv_weights
    assert n_params(backbone) == expected


@pytest.mark.parametrize("arch", RESNETS)
def test_full_resnet_is_torchvisions_network(arch: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models.video, arch)(weights=None).eval()
    backbone = build_backbone(arch).eval()
    trunk = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    backbone.load_state_dict(trunk, strict=True)
    assert n_params(backbone) == n_params(reference) - n_params(reference.fc)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = clip
        for stage in (reference.stem, reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            expected = stage(expected)
        torch.testing.assert_close(backbone(clip), expected, rtol=0, atol=0)


def test_r2plus1d_parameter_count_and_flow_stem() -> None:
    rgb = build_backbone("r2plus1d_18", 3)
    flow = build_backbone("r2plus1d_18", 2)
    # torchvision's r2plus1d_18 has 31,505,325 parameters, 513 * 400 of them in its 400-class fc.
    assert n_params(rgb) == 31_505_325 - 513 * 400
    rgb_conv, flow_conv = rgb.stem[0].weight, flow.stem[0].weight
    assert flow_conv.shape == (45, 2, 1, 7, 7)
    assert flow_conv.numel() * 3 == rgb_conv.numel() * 2
    assert n_params(rgb) - n_params(flow) == rgb_conv.numel() // 3


def test_width_multiplier_scales_every_width() -> None:
    full = build_backbone("r3d_18", 2)
    half = build_backbone("r3d_18", 2, width_multiplier=0.5)
    assert half.out_features == 256
    for (name, p_full), (_, p_half) in zip(full.named_parameters(), half.named_parameters(), strict=True):
        expected = list(p_full.shape)
        channel_dims = 2 if p_full.ndim == 5 else 1  # convolutions: (out, in, kT, kH, kW); batch norm: (C,)
        expected[:channel_dims] = [n // 2 for n in expected[:channel_dims]]
        if name == "stem.0.weight":
            expected[1] = 2  # input channels are not scaled
        assert list(p_half.shape) == expected, name
    # Convolutions hold almost all weights and scale with the square of the multiplier.
    ratio = n_params(half) / n_params(full)
    assert 0.249 < ratio < 0.251


def test_quarter_width_r2plus1d_is_about_one_sixteenth() -> None:
    full, quarter = build_backbone("r2plus1d_18"), build_backbone("r2plus1d_18", width_multiplier=0.25)
    assert quarter.out_features == 128
    assert quarter.stem[0].out_channels == 11  # round(45 / 4)
    assert 0.055 < n_params(quarter) / n_params(full) < 0.07


def test_layers_set_the_number_of_residual_blocks() -> None:
    backbone = build_backbone("r3d_18", width_multiplier=1 / 8, layers=(1, 2, 3, 1))
    assert [len(stage) for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)] == [
        1,
        2,
        3,
        1,
    ]


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backbone arch 'resnet50'") as error:
        build_backbone("resnet50")
    assert all(arch in str(error.value) for arch in ARCHITECTURES)


@pytest.mark.parametrize(
    "kwargs", [{"width_multiplier": 0.5}, {"layers": (1, 1, 1, 1)}], ids=["width", "layers"]
)
def test_s3d_rejects_reductions(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="s3d is available at its published size only"):
        build_backbone("s3d", **kwargs)


@pytest.mark.parametrize("layers", [(1, 1, 1), (1, 0, 1, 1)])
def test_invalid_layers_are_rejected(layers: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="layers must be 4 positive block counts"):
        build_backbone("r3d_18", layers=layers)


def test_clip_with_wrong_channel_count_is_rejected() -> None:
    backbone = build_backbone("r3d_18", 2, **TINY)
    with pytest.raises(ValueError, match=r"clip must have shape \[B, 2, T, H, W\]"):
        backbone(torch.randn(1, 3, 8, 32, 32))
