"""Complexity counts against ptflops' figure for torchvision's R(2+1)D-18."""

import torch
import torchvision

from motionfit.models.complexity import count_complexity
from motionfit.models.video_net import build_model


def test_r2plus1d_18_gmacs_and_parameters() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.video.r2plus1d_18(weights=None)
    reference_gmacs, reference_params = count_complexity(reference, (3, 16, 112, 112))
    assert abs(reference_gmacs - 40.77) / 40.77 < 0.01  # ptflops 0.7.5's figure
    assert reference_params == sum(p.numel() for p in reference.parameters()) == 31_505_325
    model = build_model("r2plus1d_18", 3, num_classes=400).train()
    gmacs, params = count_complexity(model, (3, 16, 112, 112))
    assert params == reference_params
    assert abs(gmacs - reference_gmacs) / reference_gmacs < 1e-3
    assert model.training  # the counted copy was switched to eval mode, not the model


def test_flow_stem_and_width_reduce_the_cost() -> None:
    torch.manual_seed(0)
    tiny_rgb = build_model("r3d_18", 3, num_classes=10, width_multiplier=1 / 8, layers=(1, 1, 1, 1))
    tiny_flow = build_model("r3d_18", 2, num_classes=10, width_multiplier=1 / 8, layers=(1, 1, 1, 1))
    rgb_gmacs, rgb_params = count_complexity(tiny_rgb, (3, 8, 32, 32))
    flow_gmacs, flow_params = count_complexity(tiny_flow, (2, 8, 32, 32))
    assert rgb_params == sum(p.numel() for p in tiny_rgb.parameters())
    first_conv = tiny_rgb.backbone.stem[0]
    assert rgb_params - flow_params == first_conv.weight.numel() // 3
    # The stem's first convolution runs at 8 x 16 x 16 output positions for each of its 8 filters.
    stem_macs_per_input_channel = 8 * 16 * 16 * 8 * 3 * 7 * 7
    torch.testing.assert_close(rgb_gmacs - flow_gmacs, stem_macs_per_input_channel / 1e9)
