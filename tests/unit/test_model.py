"""FusionNet: shapes, scales, attention weights, determinism in eval mode."""

from __future__ import annotations

import pytest
import torch

from medfuse.model import AttentionFusion, FusionNet, parameter_count


@pytest.fixture
def small_net() -> FusionNet:
    torch.manual_seed(0)
    return FusionNet((4, 8, 16)).eval()


def test_output_shape_matches_input_for_any_batch(small_net: FusionNet) -> None:
    for batch, height, width in ((1, 16, 16), (3, 32, 48), (2, 8, 64)):
        mri, pet = torch.rand(batch, 1, height, width), torch.rand(batch, 1, height, width)
        with torch.inference_mode():
            assert small_net(mri, pet).shape == (batch, 1, height, width)


def test_stride_follows_number_of_scales() -> None:
    # the inputs are halved once by the pixel unshuffle, then once per further scale
    assert FusionNet((4, 8, 16)).stride == 8
    assert FusionNet((4, 8, 16, 32)).stride == 16


def test_fewer_than_three_scales_is_refused() -> None:
    with pytest.raises(ValueError, match="three scales"):
        FusionNet((8, 16))


def test_branches_have_separate_weights(small_net: FusionNet) -> None:
    mri_first = small_net.mri_branch.stages[0][0][0].weight
    pet_first = small_net.pet_branch.stages[0][0][0].weight
    assert mri_first.data_ptr() != pet_first.data_ptr()
    assert not torch.equal(mri_first, pet_first)


def test_fused_features_exist_at_every_scale(small_net: FusionNet) -> None:
    mri, pet = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        features = small_net.fused_features(mri, pet)
    # nothing runs at full resolution: the finest fused features are at half the input's size
    assert [tuple(f.shape) for f in features] == [(1, 4, 16, 16), (1, 8, 8, 8), (1, 16, 4, 4)]


@pytest.mark.slow
def test_attention_weights_are_a_per_pixel_softmax() -> None:
    torch.manual_seed(1)
    block = AttentionFusion(4)
    mri, pet = torch.randn(2, 4, 9, 7), torch.randn(2, 4, 9, 7)
    weights = block.modality_weights(mri, pet)
    assert weights.shape == (2, 2, 9, 7)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 9, 7))
    # the weights change from pixel to pixel (they are not a global constant)
    assert weights[:, 0].std() > 0


def test_eval_mode_is_deterministic(small_net: FusionNet) -> None:
    mri, pet = torch.rand(2, 1, 24, 40), torch.rand(2, 1, 24, 40)
    with torch.inference_mode():
        assert torch.equal(small_net(mri, pet), small_net(mri, pet))


def test_gradients_reach_both_branches(small_net: FusionNet) -> None:
    small_net.train()
    mri, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    small_net(mri, pet).mean().backward()
    assert small_net.mri_branch.stages[0][0][0].weight.grad.abs().sum() > 0
    assert small_net.pet_branch.stages[0][0][0].weight.grad.abs().sum() > 0


def test_default_network_is_small() -> None:
    # the speed target (<= 25 ms per 256x256 slice on 2 CPU threads) needs a tiny network
    assert parameter_count(FusionNet()) < 300_000


def test_output_is_exactly_black_where_both_inputs_are_black(small_net: FusionNet) -> None:
    mri = torch.zeros(1, 1, 32, 32)
    pet = torch.zeros(1, 1, 32, 32)
    mri[..., 8:24, 8:24] = torch.rand(16, 16) * 0.5 + 0.5
    pet[..., 12:20, 4:12] = 0.9
    with torch.inference_mode():
        fused = small_net(mri, pet)
    background = (mri == 0) & (pet == 0)
    assert torch.all(fused[background] == 0)
    assert torch.all(FusionNet.support(mri, pet)[~background] == 1)


def test_output_is_a_per_pixel_weighting_of_the_sources() -> None:
    torch.manual_seed(3)
    net = FusionNet((4, 8, 16)).eval()
    with torch.no_grad():  # head weights zero: only its biases act, which start between the mean and the maximum
        net.head.weight.zero_()
    mri, pet = torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24)
    start = ((mri + pet) / 2 + torch.maximum(mri, pet)) / 2
    with torch.inference_mode():
        torch.testing.assert_close(net(mri, pet), start * FusionNet.support(mri, pet))


def test_full_resolution_detail_reaches_the_output(small_net: FusionNet) -> None:
    """A one-pixel change of either source changes the output at that pixel (no half-resolution blur)."""
    mri, pet = torch.full((1, 1, 32, 32), 0.4), torch.full((1, 1, 32, 32), 0.3)
    with torch.inference_mode():
        base = small_net(mri, pet)
        mri[..., 13, 18] = 0.9
        changed = (small_net(mri, pet) - base).abs()[0, 0]
    assert changed[13, 18] > 0
    assert changed[13, 18] >= changed.max() * 0.5


@pytest.mark.parametrize("channels", [(4, 8, 12), (8, 16, 32, 64)])
def test_the_inference_form_computes_the_trained_function(channels: tuple[int, ...]) -> None:
    """``for_inference`` (sigmoid attention, folded merge, half-resolution head) changes only float rounding,
    with trained-like weights (random, the attention logits spread) and black corners where the gate acts."""
    torch.manual_seed(3)
    net = FusionNet(channels).eval()
    with torch.no_grad():
        for block in net.fusions:
            block.attention.weight.mul_(8.0)  # logits far apart: the softmax is far from one half
    form = net.for_inference()
    assert form.stride == net.stride and not any(p.requires_grad for p in form.fusions.parameters())
    for height, width in ((net.stride, net.stride), (3 * net.stride, 5 * net.stride)):
        mri, pet = torch.rand(2, 1, height, width), torch.rand(2, 1, height, width) ** 3
        mri[..., : height // 3, : width // 3] = 0.0
        pet[..., : height // 3, : width // 2] = 0.0
        with torch.inference_mode():
            expected, got = net(mri, pet), form(mri, pet)
        assert float((got - expected).abs().max()) < 1e-5
        assert torch.equal(
            got[..., : height // 3, : width // 3], torch.zeros_like(got[..., : height // 3, : width // 3])
        )


def test_source_weights_are_the_maps_the_output_is_made_of(small_net: FusionNet) -> None:
    torch.manual_seed(4)
    mri, pet = torch.rand(2, 1, 16, 32), torch.rand(2, 1, 16, 32)
    mri[..., :4, :4] = pet[..., :4, :4] = 0.0  # black in both: gated to 0
    with torch.inference_mode():
        mri_weight, pet_weight, max_weight, offset = small_net.source_weights(mri, pet)
        fused = small_net(mri, pet)
    assert mri_weight.shape == pet_weight.shape == max_weight.shape == offset.shape == mri.shape
    combined = mri_weight * mri + pet_weight * pet + max_weight * torch.maximum(mri, pet) + offset
    expected = combined * FusionNet.support(mri, pet)
    assert torch.equal(fused, expected)
    assert torch.all(fused[..., :4, :4] == 0)
