"""The generation API: determinism by seed, truncation, style mixing, precision, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.latents import lerp, parse_seeds, slerp, z_from_seeds


def test_z_from_a_seed_is_the_same_on_every_platform():
    z = z_from_seeds([0, 42], 4)
    expected = [[0.12573022, -0.13210486, 0.64042264, 0.10490011], [0.30471709, -1.03998411, 0.75045121, 0.94056469]]
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-6)


def test_same_seeds_give_identical_volumes(tiny_generator):
    a = tiny_generator.generate(seeds=[3, 4], precision="fp32")
    b = tiny_generator.generate(seeds=[3, 4], precision="fp32")
    assert a.shape == (2, 16, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def test_volumes_are_clamped_to_unit_range(tiny_generator):
    v = tiny_generator.generate(seeds=range(4), precision="fp32")
    assert v.min() >= 0.0 and v.max() <= 1.0


def test_a_seed_gives_the_same_volume_alone_or_in_a_batch(tiny_generator):
    alone = tiny_generator.generate(seeds=[7], precision="fp32")
    batched = tiny_generator.generate(seeds=[6, 7], precision="fp32", batch_size=2)
    np.testing.assert_allclose(alone[0], batched[1], atol=1e-5)


def test_a_seeds_w_is_the_same_bits_alone_or_among_other_seeds():
    from CircleOfWillisGANLib.generator import load_generator

    gen = load_generator("demo", device="cpu")
    among = gen.styles(seeds=[1, 2, 3, 4, 5, 6, 7, 8], psi=0.7)
    for k, seed in enumerate(range(1, 9)):
        assert torch.equal(among[k], gen.styles(seeds=[seed], psi=0.7)[0])


def test_bulk_mapping_maps_the_batch_at_once_and_agrees_with_the_exact_w(tiny_generator):
    rows = []
    hook = tiny_generator.model.mapping.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    z = tiny_generator.z_from_seeds(range(50))
    try:
        bulk = tiny_generator.mapping(z, exact=False)
    finally:
        hook.remove()
    assert rows == [50]
    torch.testing.assert_close(bulk, tiny_generator.mapping(z), rtol=1e-5, atol=1e-6)


def test_latent_helpers_take_arrays_and_whole_numbers_and_name_bad_seeds():
    import numpy as np

    a, b = z_from_seeds([1], 4), z_from_seeds([2], 4)
    assert torch.equal(lerp(a.numpy(), b.numpy(), 0.25), lerp(a, b, 0.25))  # arrays as the tensors they hold
    assert torch.allclose(slerp(a.numpy(), b, 1.0), b)
    assert torch.allclose(slerp(torch.tensor([[1, 0]]), torch.tensor([[0, 2]]), 0.5), torch.tensor([[0.7071, 1.4142]]),
                          atol=1e-4)
    with pytest.raises(InputError, match=r"two real latents of one shape, got \(1, 4\) .* and \(4,\)"):
        lerp(a, b[0], 0.5)
    with pytest.raises(InputError, match="two latents \\(tensors or arrays of numbers\\), got str"):
        slerp("a", b, 0.5)
    assert torch.equal(z_from_seeds(3, 4), z_from_seeds([3], 4)) and torch.equal(z_from_seeds(np.arange(2), 4),
                                                                               z_from_seeds([0, 1], 4))
    for seeds in ([], "1-3"):
        with pytest.raises(InputError, match="seeds"):
            z_from_seeds(seeds, 4)


def test_lerp_of_latents_of_different_precision_runs_in_the_wider_one_and_ends_on_each_bit_for_bit():
    a = torch.tensor([[0.1, -2.0, 3.3]], dtype=torch.float64)  # w read back from a sidecar
    b = torch.tensor([[1.7, 0.4, -0.9]], dtype=torch.float32)  # w from the mapping
    for first, second in ((a, b), (b, a)):
        assert lerp(first, second, 0.5).dtype == torch.float64
        torch.testing.assert_close(lerp(first, second, 0.5), (first.double() + second.double()) / 2)
        assert torch.equal(lerp(first, second, 0.0), first.double())
        assert torch.equal(lerp(first, second, 1.0), second.double())
    whole = lerp(torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), 0.5)  # latents typed as whole numbers
    assert whole.dtype == torch.float32 and torch.equal(whole, torch.tensor([[1.0, 2.0]]))


def test_psi_zero_gives_the_average_volume_for_every_seed(tiny_generator):
    v = tiny_generator.generate(seeds=[1, 2, 3], psi=0.0, noise_seed=0, precision="fp32")
    w_avg = tiny_generator.w_avg.cpu()
    average = tiny_generator.generate(w=w_avg[None], noise_seed=0, precision="fp32")[0]
    for volume in v:
        np.testing.assert_allclose(volume, average, atol=1e-6)
    w = tiny_generator.styles(seeds=[4])
    torch.testing.assert_close(tiny_generator.styles(seeds=[4], psi=0.5), w_avg + 0.5 * (w - w_avg))


def test_style_mixing_takes_fine_blocks_from_the_second_seed(tiny_generator):
    ws = tiny_generator.styles(seeds=[1], style_mix=([2], 2))
    w1 = tiny_generator.styles(seeds=[1])
    w2 = tiny_generator.styles(seeds=[2])
    assert torch.equal(ws[:, :2], w1[:, :2]) and torch.equal(ws[:, 2:], w2[:, 2:])


def test_noise_seed_changes_only_the_stochastic_detail(tiny_generator):
    with torch.no_grad():
        for block in tiny_generator.model.synthesis.blocks:
            block.noise1.weight.fill_(0.5)
    a = tiny_generator.generate(seeds=[1], noise_seed=1, precision="fp32")
    b = tiny_generator.generate(seeds=[1], noise_seed=2, precision="fp32")
    c = tiny_generator.generate(seeds=[1], noise_seed=1, precision="fp32")
    with torch.no_grad():
        for block in tiny_generator.model.synthesis.blocks:
            block.noise1.weight.zero_()
    assert np.array_equal(a, c) and not np.array_equal(a, b)


def test_bfloat16_stays_within_one_percent_of_float32(golden_dir):
    from CircleOfWillisGANLib.generator import load_generator

    gen = load_generator(golden_dir / "model_0.pt", device="cpu")
    w = gen.mapping(gen.z_from_seeds([1, 2]))
    ref = gen.synthesize(w, precision="fp32")
    low = gen.synthesize(w, precision="bf16")
    assert float((low - ref).abs().max() / (ref.max() - ref.min())) < 1e-2


@pytest.mark.parametrize("before_2_9", [False, True])
def test_fp32_on_a_gpu_turns_tf32_off_inside_and_restores_it_after_on_old_and_new_pytorch(monkeypatch, before_2_9):
    from CircleOfWillisGANLib.precision import exact_float32

    if before_2_9:  # as PyTorch 2.8, the newest for Slicer 5.8's Python 3.9: no per-operation fp32_precision
        monkeypatch.delattr(type(torch.backends.cudnn), "conv")
        flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
        exact = [False, False]
    else:
        flags = [(torch.backends.cudnn.conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
        exact = ["ieee", "ieee"]
    before = [getattr(owner, name) for owner, name in flags]
    with exact_float32(torch.device("cuda"), torch.float32):
        assert [getattr(owner, name) for owner, name in flags] == exact
    assert [getattr(owner, name) for owner, name in flags] == before
    with exact_float32(torch.device("cuda"), torch.bfloat16):
        assert [getattr(owner, name) for owner, name in flags] == before


@pytest.mark.parametrize("native, chosen", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_on_a_gpu_takes_bf16_only_where_it_is_native_not_emulated(monkeypatch, native, chosen):
    from CircleOfWillisGANLib.precision import resolve_precision
    from training.trainer import resolve_training_precision

    def is_bf16_supported(including_emulation=True):  # as on a V100 or T4: bf16 tensors work, emulated
        return including_emulation or native

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", torch.device("cuda"))[0] == chosen
    assert resolve_training_precision("auto", torch.device("cuda"), channels_last=False).dtype == chosen


@pytest.mark.parametrize("tolerance, chosen", [(1.0, "bf16"), (0.0, "fp32")])
def test_auto_precision_keeps_bf16_only_where_probe_volumes_match_fp32(golden_dir, monkeypatch, tolerance, chosen):
    from CircleOfWillisGANLib import generator as generator_module
    from CircleOfWillisGANLib.precision import relative_max_error, resolve_precision

    def fast_bf16(precision, device):  # as on a CPU with AVX512-BF16 or AMX, whatever this one has
        return resolve_precision("bf16" if precision == "auto" else precision, device)

    monkeypatch.setattr(generator_module, "resolve_precision", fast_bf16)
    monkeypatch.setattr(generator_module, "REDUCED_PRECISION_TOLERANCE", tolerance)
    gen = generator_module.load_generator(golden_dir / "model_0.pt", device="cpu")
    assert gen.resolved_precision("fp32") == "fp32" and gen.auto_precision_error is None
    assert gen.resolved_precision() == chosen and 0.0 < gen.auto_precision_error < 1e-2
    w = gen.mapping(gen.z_from_seeds([3]))
    assert torch.equal(gen.synthesize(w, precision="auto"), gen.synthesize(w, precision=chosen))
    probe = gen.mapping(gen.z_from_seeds(generator_module.PRECISION_PROBE_SEEDS))
    ref = gen.synthesize(probe, noise_seed=list(generator_module.PRECISION_PROBE_SEEDS), precision="fp32")
    worst = max(relative_max_error(gen.synthesize(probe, noise_seed=list(generator_module.PRECISION_PROBE_SEEDS),
                                                  precision="bf16", batch_size=size), ref) for size in (1, 2))
    assert gen.auto_precision_error == worst  # the batched arithmetic is probed too, not only one volume at a time


def test_psi_1_is_w_itself_and_volumes_given_as_w_take_noise_seed_0_whatever_their_place(golden_dir):
    from CircleOfWillisGANLib.generator import load_generator

    gen = load_generator(golden_dir / "model_0.pt", device="cpu")
    z = gen.z_from_seeds([4, 5, 6])
    assert torch.equal(gen.styles(z=z, psi=1.0), gen.broadcast_w(gen.mapping(z)))
    together = gen.generate(z=z, precision="fp32")
    alone = gen.generate(z=z[2:], precision="fp32")
    np.testing.assert_allclose(together[2], alone[0], atol=1e-6)
    np.testing.assert_array_equal(gen.generate(z=z[2:], noise_seed=0, precision="fp32"), alone)


@pytest.mark.parametrize("noise, message", [("x", "noise must be an array of numbers, got str"),
                                            (torch.zeros(1, 2, dtype=torch.complex64), "complex64 values")])
def test_noise_that_is_not_real_numbers_is_refused_in_one_line(golden_dir, noise, message):
    from CircleOfWillisGANLib.generator import load_generator

    with pytest.raises(InputError, match=message):
        load_generator(golden_dir / "model_0.pt", device="cpu").generate(seeds=[1], noise=noise)


def test_relative_max_error_is_the_worst_volumes_worst_voxel_over_its_range():
    from CircleOfWillisGANLib.precision import relative_max_error

    ref = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.5, 1.0]])
    out = ref + torch.tensor([[0.02, 0.0, 0.0], [0.0, 0.03, 0.0]])
    assert relative_max_error(out, ref) == pytest.approx(0.03)


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": [1], "psi": 3.0}, "psi"),
    ({"seeds": [-1]}, "out of range"),
    ({"seeds": [1.5]}, "not an integer"),
    ({"seeds": [1], "z": torch.zeros(1, 32)}, "exactly one"),
    ({"w": torch.zeros(1, 5)}, "w must have shape"),
    ({"z": torch.full((1, 32), float("nan"))}, "NaN"),
    ({"seeds": [1, 2], "noise_seed": [1]}, "noise seeds"),
    ({"seeds": [1], "style_mix": ([2], 0)}, "crossover"),
    ({"seeds": [1], "noise": torch.zeros(1, 2, 3)}, "noise has shape"),
    ({"seeds": [1], "precision": "fp16"}, "fp16"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": "1-3"}, "is text"),
    ({"z": torch.zeros(0, 32)}, "no rows"),
    ({"z": "z"}, "array of numbers"),
    ({"w": torch.full((1, 32), 1e38)}, "w reaches .* where the model makes no anatomy"),
    ({"w": torch.full((1, 32), 1e3)}, "w reaches .* where the model makes no anatomy"),  # finite, but saturated
    ({"seeds": [1], "batch_size": 0}, "batch size"),
    ({"seeds": [1], "batch_size": 1.5}, "batch size"),
    ({"seeds": [1], "noise_seed": 1.5}, "noise seeds must be a list"),
    ({"seeds": [1], "noise_seed": 2, "noise": torch.zeros(1)}, "not both"),
    ({"seeds": [1], "style_mix": ([2], 1.5)}, "whole block number"),
    ({"seeds": [1], "style_mix": [2]}, "style_mix must be"),
    ({"seeds": [1], "psi": True}, "psi True is not a number"),
    ({"seeds": [1], "psi": float("nan")}, "psi nan is not a number"),
])
def test_bad_arguments_raise_input_errors_that_name_the_fix(tiny_generator, kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_generator.generate(**kwargs)


def test_styles_of_non_finite_w_and_an_empty_model_path_are_refused(tiny_generator):
    from CircleOfWillisGANLib.generator import load_generator

    with pytest.raises(InputError, match="w contains NaN or infinite values"):
        tiny_generator.styles(w=torch.full((1, 32), float("nan")))
    with pytest.raises(InputError, match="no model was given"):
        load_generator("  ")


def test_seed_ranges_parse_like_the_cli_documents():
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    assert parse_seeds(" 1 - 3 , 7 ") == [1, 2, 3, 7]
    for bad in ("", "a-b", "5-1", "-3", "1_0", "1-1_0", "\u0663", "+3", "1-2-3"):
        with pytest.raises(InputError, match="cannot read seeds|no seeds|from the smaller seed"):
            parse_seeds(bad)
    for bad in ("1,,2", "1,", ",1"):  # a seed left out between commas
        with pytest.raises(InputError, match="have an empty item between commas"):
            parse_seeds(bad)


def test_one_seed_or_a_tensor_or_generator_of_seeds_is_the_same_as_a_list(tiny_generator):
    listed, one = tiny_generator.generate(seeds=[3, 4]), tiny_generator.generate(seeds=[3])
    for seed in (3, np.int64(3), torch.tensor(3)):
        np.testing.assert_array_equal(tiny_generator.generate(seeds=seed), one)
    np.testing.assert_array_equal(tiny_generator.generate(seeds=torch.tensor([3, 4])), listed)
    np.testing.assert_array_equal(tiny_generator.generate(seeds=(s for s in (3, 4))), listed)


@pytest.mark.parametrize("a, b, t, message", [
    (torch.zeros(1, 8), torch.zeros(2, 8), 0.5, "one shape"),
    (torch.ones(1, 8), torch.ones(1, 8), float("nan"), "finite number"),
    (torch.full((1, 8), float("nan")), torch.ones(1, 8), 0.5, "NaN"),
])
def test_interpolating_mismatched_or_non_finite_latents_is_refused(a, b, t, message):
    for helper in (slerp, lerp):
        with pytest.raises(InputError, match=message):
            helper(a, b, t)


def test_interpolation_helpers_hit_both_ends():
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lerp(a, b, 0.5), (a + b) / 2)
    torch.testing.assert_close(slerp(a, a, 0.3), a)
    right, up = torch.eye(8)[:1], torch.eye(8)[1:2]  # a quarter turn apart: halfway lies on the circle
    torch.testing.assert_close(slerp(right, up, 0.5), (right + up) / 2 ** 0.5)
    torch.testing.assert_close(slerp(2 * right, 2 * up, 1 / 3).norm(), torch.tensor(2.0))


def test_interpolations_start_and_end_on_their_latents_bit_for_bit():
    for _ in range(20):
        a, b = torch.randn(1, 64), torch.randn(1, 64)
        for helper in (slerp, lerp):
            assert torch.equal(helper(a, b, 0.0), a) and torch.equal(helper(a, b, 1.0), b)
