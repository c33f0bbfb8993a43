"""Exact import of the published reference's checkpoints (the golden vectors are the acceptance test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.checkpoint import load_checkpoint, save_checkpoint
from CircleOfWillisGANLib.errors import CheckpointError, InputError
from CircleOfWillisGANLib.generator import CoWGenerator, load_generator
from CircleOfWillisGANLib.reference_import import convert_state, import_reference, infer_architecture

REPO = Path(__file__).resolve().parents[2]


def _golden_inputs(golden_dir):
    z = torch.from_numpy(np.load(golden_dir / "z.npy"))
    noise = torch.from_numpy(np.load(golden_dir / "noise.npy"))
    return z, noise, np.load(golden_dir / "expected_w.npy"), np.load(golden_dir / "expected_output.npy")


def test_golden_architecture_is_inferred_from_tensor_shapes(golden_dir):
    arch = import_reference(str(golden_dir / "model_0.pt")).architecture
    assert (arch.latent_dim, arch.network_capacity, arch.fmap_max) == (64, 2, 64)
    assert arch.output_shape == (32, 64, 64) and arch.noise_mode == "reference"


def test_converted_model_reproduces_the_reference_output(golden_dir, tmp_path):
    out = tmp_path / "golden.safetensors"
    save_checkpoint(out, import_reference(str(golden_dir / "model_0.pt")))
    gen = load_generator(out, device="cpu")
    z, noise, expected_w, expected = _golden_inputs(golden_dir)
    w = gen.mapping(z)
    np.testing.assert_allclose(w.numpy(), expected_w, atol=1e-5)
    for batch in (1, 2):
        raw = gen.synthesize(w, noise=noise, precision="fp32", batch_size=batch).numpy()
        assert np.abs(raw - expected[:, 0]).max() <= 1e-5


def test_generate_clamps_the_reference_output_to_unit_range(golden_dir):
    gen = load_generator(golden_dir / "model_0.pt", device="cpu")
    z, noise, _, expected = _golden_inputs(golden_dir)
    volumes = gen.generate(z=z, noise=noise, precision="fp32")
    np.testing.assert_allclose(volumes, np.clip(expected[:, 0], 0, 1), atol=1e-4)


def test_w_avg_is_deterministic(golden_dir):
    a = import_reference(str(golden_dir / "model_0.pt")).w_avg
    b = import_reference(str(golden_dir / "model_0.pt")).w_avg
    assert torch.equal(a, b)


def test_paper_configuration_state_dict_converts():
    shapes = {}
    for line in (REPO.parent / "shared" / "reference" / "claim-paper-config-state-dict.tsv").read_text().splitlines() \
            if (REPO.parent / "shared" / "reference").is_dir() else []:
        if line.startswith(("SE.", "GE.")):
            key, shape = line.split("\t")
            shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    if not shapes:
        pytest.skip("../shared/reference is not beside this checkout")
    state = {k: torch.tensor([1.0, 2.0, 1.0]) if k.endswith("upsample.1.f") else torch.zeros(s) for k, s in shapes.items()}
    arch = infer_architecture(state, {"image_size": 128, "network_capacity": 8, "lr_mlp": 0.1})
    assert (arch.latent_dim, arch.fmap_max, arch.output_shape) == (512, 512, (32, 128, 128))
    converted = convert_state(state, arch)
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in state.values()) - 5 * 3


def test_truncated_reference_checkpoint_gives_one_clear_error(golden_dir, tmp_path):
    broken = tmp_path / "model_3.pt"
    broken.write_bytes((golden_dir / "model_0.pt").read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        import_reference(str(broken))


def test_a_file_that_is_no_pytorch_checkpoint_is_named_as_such(tmp_path):
    text = tmp_path / "model_2.pt"
    text.write_text("case,index\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        import_reference(str(text))


def test_a_folder_passed_as_the_checkpoint_or_config_is_named_as_a_folder(golden_dir):
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        import_reference(str(golden_dir))
    with pytest.raises(CheckpointError, match="config file .* is a folder"):
        import_reference(str(golden_dir / "model_0.pt"), config_path=golden_dir)


def test_a_pickle_with_code_objects_is_refused_without_running_it(tmp_path):
    sneaky = tmp_path / "model_4.pt"
    torch.save({"GAN": Path("/not/a/tensor")}, sneaky)
    with pytest.raises(CheckpointError, match="weights-only load refuses"):
        import_reference(str(sneaky))


def test_foreign_pickle_is_refused(tmp_path):
    other = tmp_path / "model_1.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="no 'GAN' state dict"):
        import_reference(str(other))


@pytest.mark.parametrize("damage, message", [
    (lambda gan: gan.pop("SE.net.0.weight"), "lacks SE.net.0.weight"),
    (lambda gan: [gan.pop(k) for k in list(gan) if k.startswith("GE.blocks.0.")], "lacks GE.blocks.0.conv1.weight"),
    (lambda gan: gan.__setitem__("SE.net.0.weight", torch.zeros(64)), "expected 2 dimensions"),
])
def test_a_checkpoint_missing_or_mangling_a_tensor_gives_one_clear_error(golden_dir, tmp_path, damage, message):
    gan = torch.load(golden_dir / "model_0.pt", weights_only=True)["GAN"]
    damage(gan)
    torch.save({"GAN": gan}, tmp_path / "model_5.pt")
    with pytest.raises(CheckpointError, match=message):
        import_reference(str(tmp_path / "model_5.pt"), str(golden_dir / ".config.json"))


@pytest.mark.parametrize("spacing", [(float("nan"), 0.62, 0.62), (0.62, 0.0, 0.62), (0.62, 0.62, float("inf")), (0.62, 0.62),
                                     (1e-300, 0.62, 0.62), (0.62, 1e300, 0.62)])
def test_a_voxel_spacing_that_is_not_three_positive_millimetres_is_refused(golden_dir, spacing):
    with pytest.raises(InputError, match="three positive millimetres"):
        import_reference(str(golden_dir / "model_0.pt"), spacing_mm=spacing)


def test_config_that_contradicts_the_tensors_is_refused(golden_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 128, "network_capacity": 2}))
    with pytest.raises(CheckpointError, match="image_size 128"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


def test_unsupported_reference_options_are_refused(golden_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 64, "network_capacity": 2, "attn_layers": [1]}))
    with pytest.raises(CheckpointError, match="attn_layers"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


def test_imported_checkpoint_records_provenance(golden_dir, tmp_path):
    out = tmp_path / "golden.safetensors"
    save_checkpoint(out, import_reference(str(golden_dir / "model_0.pt")))
    meta = load_checkpoint(out).metadata
    assert meta["provenance"]["checkpoint_number"] == 0
    assert len(meta["provenance"]["file_sha256"]) == 64
    assert meta["data"]["spacing_mm"] == [0.62, 0.62, 0.62]
    assert isinstance(CoWGenerator(load_checkpoint(out), "cpu").affine, np.ndarray)


@pytest.mark.parametrize("text", ["[1, 2]", "null", '{"image_size": 64, "network_capacity": "two"}',
                                  '{"image_size": 64, "lr_mlp": "fast"}', '{"lr_mlp": NaN}', '{"lr_mlp": 0}',
                                  '{"image_size": "64"}', '{"network_capacity": 0}', '{"network_capacity": null}'])
def test_a_config_that_is_not_a_reference_config_gives_one_clear_error(golden_dir, tmp_path, text):
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(CheckpointError, match="config"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


def test_a_missing_config_is_warned_about_but_a_missing_checkpoint_is_the_only_error(golden_dir, tmp_path, caplog):
    import shutil

    shutil.copy(golden_dir / "model_0.pt", tmp_path / "model_0.pt")
    with caplog.at_level("WARNING"):
        import_reference(str(tmp_path / "model_0.pt"))
    assert [r.getMessage() for r in caplog.records] == [
        f"no .config.json beside {tmp_path / 'model_0.pt'}: assuming the reference's defaults (lr_mlp 0.1); pass "
        "--config if the run used other settings"]
    caplog.clear()
    with pytest.raises(CheckpointError, match="does not exist"):
        import_reference(str(tmp_path / "model_9.pt"))
    assert not caplog.records
