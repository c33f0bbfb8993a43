"""The 3D StyleGAN2 networks: layout rules, shapes, and the equivalence of the fast and general paths."""

from __future__ import annotations

import pytest
import torch

from CircleOfWillisGANLib.architecture import PRESETS, Architecture, synthesis_flops
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.generator_model import GeneratorModel, init_weights
from CircleOfWillisGANLib.networks import Discriminator
from CircleOfWillisGANLib.networks.discriminator import MinibatchStd, std_group_size
from CircleOfWillisGANLib.networks.noise import noise_from_seeds, noise_shape


def test_paper_preset_has_the_reference_channels_and_flops():
    arch = PRESETS["paper"]
    assert arch.generator_channels() == [512, 256, 128, 64, 32, 16]
    assert arch.discriminator_channels() == [1, 32, 64, 128, 256, 512, 1024, 1024]
    assert synthesis_flops(arch) == pytest.approx(84.3e9, rel=1e-3)


def test_depth_stops_growing_at_its_own_size_like_the_reference():
    arch = PRESETS["paper"]
    assert [arch.upsample_factors(i) for i in range(6)] == [(1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert [arch.block_shape(i) for i in (0, 3, 5)] == [(4, 4, 4), (32, 32, 32), (32, 128, 128)]


@pytest.mark.parametrize("shape", [(16, 32, 32), (8, 32, 32), (32, 32, 32), (4, 16, 16)])
def test_any_power_of_two_grid_is_generated_at_its_shape(shape):
    arch = Architecture(latent_dim=16, mapping_layers=2, network_capacity=1, fmap_max=8, output_shape=shape)
    model = init_weights(GeneratorModel(arch))
    ws = model.mapping(torch.randn(2, 16))[:, None].expand(-1, model.synthesis.num_ws, -1)
    out = model.synthesis(ws, noise_from_seeds(arch, [0, 1]))
    assert out.shape == (2, 1, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(16, 32, 32), (32, 64, 64)])
def test_discriminator_scores_one_logit_per_volume(shape):
    arch = Architecture(latent_dim=16, network_capacity=1, fmap_max=16, output_shape=shape)
    logits = Discriminator(arch)(torch.randn(3, 1, *shape))
    assert logits.shape == (3,)


def test_minibatch_std_groups_divide_the_batch():
    assert [std_group_size(n, 4) for n in (1, 2, 3, 4, 6, 7, 8, 12)] == [1, 2, 3, 4, 3, 1, 4, 4]


def test_minibatch_std_appends_each_groups_feature_spread():
    x = torch.randn(6, 3, 2, 2, 2, dtype=torch.float64)
    out = MinibatchStd(4)(x)  # groups of 3: volumes (0, 2, 4) and (1, 3, 5)
    assert out.shape == (6, 4, 2, 2, 2) and torch.equal(out[:, :3], x)
    for members in ((0, 2, 4), (1, 3, 5)):
        spread = x[list(members)].std(dim=0, unbiased=False).mean()
        for i in members:
            assert torch.allclose(out[i, 3], torch.full((2, 2, 2), spread.item(), dtype=torch.float64), atol=1e-6)
    same = MinibatchStd(4)(torch.ones(4, 2, 2, 2, 2))[:, 2]
    assert torch.allclose(same, torch.full_like(same, 1e-4))


def test_a_discriminator_with_minibatch_std_scores_a_volume_by_its_group_and_without_it_alone():
    arch = Architecture(latent_dim=16, network_capacity=1, fmap_max=16, output_shape=(16, 32, 32))
    x = torch.randn(4, 1, 16, 32, 32)
    changed = x.clone()
    changed[2] = torch.randn(1, 16, 32, 32)  # shares a group of 2 with volume 0 (groups: 0, 2 and 1, 3)
    plain, grouped = init_weights(Discriminator(arch), 1), init_weights(Discriminator(arch, minibatch_std=2), 1)
    with torch.no_grad():
        assert torch.allclose(plain(x)[[0, 1, 3]], plain(changed)[[0, 1, 3]])
        before, after = grouped(x), grouped(changed)
        assert not torch.allclose(before[0], after[0]) and torch.allclose(before[[1, 3]], after[[1, 3]])
    assert grouped.final_conv.in_channels == plain.final_conv.in_channels + 1
    assert set(grouped.state_dict()) == set(plain.state_dict())
    with pytest.raises(InputError, match="minibatch_std must be 0"):
        Discriminator(arch, minibatch_std=-1)


def test_grid_sizes_must_be_powers_of_two():
    with pytest.raises(InputError, match="power of two"):
        Architecture(output_shape=(30, 128, 128))


def test_folded_batch_one_path_equals_the_batched_path():
    arch = PRESETS["tiny"]
    model = init_weights(GeneratorModel(arch), seed=3).requires_grad_(False)
    with torch.no_grad():
        for block in model.synthesis.blocks:
            block.noise1.weight.normal_()
            block.noise2.bias.normal_()
        ws = model.mapping(torch.randn(2, arch.latent_dim))[:, None].expand(-1, model.synthesis.num_ws, -1)
        noise = noise_from_seeds(arch, [5, 6])
        batched = model.synthesis(ws, noise)
        single = torch.cat([model.synthesis(ws[i:i + 1], noise[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(single, batched, rtol=1e-5, atol=1e-5)


def test_training_mode_gradients_reach_every_generator_parameter():
    arch = PRESETS["tiny"]
    model = init_weights(GeneratorModel(arch), seed=0)
    with torch.no_grad():
        for block in model.synthesis.blocks:
            block.noise1.weight.fill_(0.1)
            block.noise2.weight.fill_(0.1)
    ws = model.mapping(torch.randn(2, arch.latent_dim))[:, None].expand(-1, model.synthesis.num_ws, -1)
    model.synthesis(ws, noise_from_seeds(arch, [0, 1])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_noise_conventions_have_their_documented_shapes():
    ref = Architecture(output_shape=(32, 64, 64), noise_mode="reference")
    native = Architecture(output_shape=(32, 64, 64), noise_mode="native")
    assert noise_shape(ref, 2) == (2, 64, 64, 64, 1)
    assert noise_shape(native, 2) == (2, 1, 32, 64, 64)
    uniform = noise_from_seeds(ref, [0])
    assert 0.0 <= float(uniform.min()) and float(uniform.max()) < 1.0


def test_the_batch_one_cpu_convolution_matches_pytorchs_with_gradients():
    from CircleOfWillisGANLib.networks.ops import conv3d

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 4, 8, 8, generator=gen, requires_grad=True)
    w = torch.randn(8, 16, 3, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(8, generator=gen, requires_grad=True)
    ours, theirs = conv3d(x, w, b, padding=1), torch.nn.functional.conv3d(x, w, b, padding=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for a, c in zip(torch.autograd.grad(ours.square().sum(), (x, w, b)), torch.autograd.grad(theirs.square().sum(), (x, w, b))):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
def test_noise_added_in_place_equals_the_broadcast_sum(layout):
    from CircleOfWillisGANLib.networks.synthesis import NoiseInjection

    torch.manual_seed(0)
    layer = NoiseInjection(6)
    layer.weight.data.normal_()
    x = torch.randn(2, 6, 4, 5, 3)
    noise = torch.randn(2, 1, 8, 5, 3)[:, :, ::2]
    expected = x + noise * layer.weight.view(1, -1, 1, 1, 1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "strided":
        x = torch.cat([x, x], dim=4)[..., :3]
    with torch.no_grad():
        out = layer(x, noise)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (2, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_upsampling_equals_pytorchs_trilinear_and_keeps_the_layout(factors, dtype):
    from CircleOfWillisGANLib.networks.ops import upsample

    x = torch.randn(2, 5, 1, 3, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last_3d) if dtype == torch.bfloat16 else x
    expected = torch.nn.functional.interpolate(x.float(), scale_factor=[float(f) for f in factors], mode="trilinear",
                                               align_corners=False)
    with torch.no_grad():
        out = upsample(x, factors)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last_3d) == (dtype == torch.bfloat16)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 2e-2)
