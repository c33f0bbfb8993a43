"""Latent directions: SeFa of the style affines, PCA of W, cached once per model in its checkpoint."""

from __future__ import annotations

import pytest
import torch

from CircleOfWillisGANLib import directions as D
from CircleOfWillisGANLib.checkpoint import load_checkpoint, save_checkpoint
from CircleOfWillisGANLib.generator import CoWGenerator, build_generator


def test_six_blocks_split_into_coarse_middle_and_fine_pairs():
    assert D.layer_groups(6) == {"coarse": (0, 1), "middle": (2, 3), "fine": (4, 5)}


def test_sefa_finds_the_direction_the_affines_stretch_most():
    a = torch.diag(torch.tensor([1.0, 5.0, 2.0]))
    top = D.sefa([a], 2)
    assert torch.allclose(top, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6)


def test_pca_recovers_the_axis_of_largest_spread_and_its_sigma():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(20000, 3, generator=g) * torch.tensor([0.5, 3.0, 1.0])
    axes, sigma = D.pca(samples, 1)
    assert abs(float(axes[0, 1])) > 0.999
    assert abs(float(sigma[0]) - 3.0) < 0.05


def test_directions_are_labelled_by_the_layers_they_move():
    gen = build_generator("tiny", seed=0, device="cpu")
    labels = [d.label for d in D.directions_for(gen)]
    assert labels[0] == "Direction 1 (coarse)"
    assert any("(fine)" in label for label in labels) and labels[-1].endswith("(PCA of W, all layers)")


def test_directions_are_computed_once_and_cached_in_the_checkpoint(monkeypatch, tmp_path):
    gen = build_generator("tiny", seed=0, device="cpu")
    first = D.directions_for(gen)
    assert "directions" in gen.checkpoint.metadata and "sefa_coarse" in gen.checkpoint.directions
    monkeypatch.setattr(D, "compute_directions", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert [d.label for d in D.directions_for(gen)] == [d.label for d in first]
    save_checkpoint(tmp_path / "m.safetensors", gen.checkpoint)
    reloaded = CoWGenerator(load_checkpoint(tmp_path / "m.safetensors"), "cpu")
    again = D.directions_for(reloaded)
    assert all(torch.equal(a.vector, b.vector) and a.sigma == b.sigma for a, b in zip(first, again))


def test_a_direction_moves_only_its_own_blocks_by_amount_times_sigma():
    gen = build_generator("tiny", seed=0, device="cpu")
    dirs = D.directions_for(gen)
    ws = gen.styles(seeds=[1])
    moved = D.apply_directions(ws, dirs, [2.0])
    delta = moved - ws
    for block in range(gen.num_ws):
        expected = 2.0 * dirs[0].sigma * dirs[0].vector if block in dirs[0].layers else torch.zeros_like(dirs[0].vector)
        assert torch.allclose(delta[0, block], expected, atol=1e-6)


def test_directions_map_their_samples_in_batches_not_one_at_a_time():
    gen = build_generator("tiny", seed=0, device="cpu")
    rows = []
    hook = gen.model.mapping.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    try:
        D.compute_directions(gen, samples=2500)
    finally:
        hook.remove()
    assert rows == [1000, 1000, 500]


def test_recomputing_the_demo_models_directions_gives_the_ones_it_carries():
    from CircleOfWillisGANLib.generator import load_generator

    gen = load_generator("demo", device="cpu")
    tensors, info = D.compute_directions(gen)
    for key, vectors in tensors.items():
        torch.testing.assert_close(vectors, gen.directions[key], rtol=0, atol=1e-6)
    cached = [(e["key"], e["row"], e["sigma"]) for e in gen.checkpoint.metadata[D.METADATA_KEY]["entries"]
              if e["method"] in ("sefa", "pca")]
    assert [(e["key"], e["row"]) for e in info["entries"]] == [(k, r) for k, r, _ in cached]
    assert [e["sigma"] for e in info["entries"]] == pytest.approx([s for _, _, s in cached], rel=1e-6)


def test_direction_amounts_and_latents_that_would_make_nan_or_a_torch_error_are_refused_naming_them(tiny_generator):
    directions = D.directions_for(tiny_generator)
    ws = tiny_generator.styles(seeds=[1])
    for amounts, message in (([float("nan")], "the amount of direction 1 must be a finite number"),
                             ([0.0, "1"], "the amount of direction 2 must be a finite number"),
                             (1.0, "a list with one number per direction")):
        with pytest.raises(D.InputError, match=message):
            D.apply_directions(ws, directions, amounts)
    for bad in (ws[0], ws.numpy()):
        with pytest.raises(D.InputError, match="ws must be a \\(N, num_ws, latent\\) tensor"):
            D.apply_directions(bad, directions, [1.0])
    moved = D.apply_directions(ws, directions, [2.0])
    step = 2.0 * directions[0].sigma * directions[0].vector
    assert torch.allclose(moved[0, list(directions[0].layers)] - ws[0, list(directions[0].layers)], step.expand(
        len(directions[0].layers), -1), atol=1e-6)
