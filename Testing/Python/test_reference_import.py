"""Exact import of the published reference's checkpoints (the golden vectors are the acceptance test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.checkpoint import load_checkpoint, save_checkpoint
from CircleOfWillisGANLib.errors import CheckpointError, InputError
from CircleOfWillisGANLib.generator import CoWGenerator, load_generator
from CircleOfWillisGANLib.reference_import import convert_state, import_reference, infer_architecture
from CircleOfWillisGANLib.resources import demo_model_path

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


def _reference_mapping(state, prefix, z, lr_mul=0.1):
    """The reference's mapping network written out from its description: L2-normalised z, then equalised linear
    layers (weight and bias times lr_mul) with LeakyReLU(0.2)."""
    x = torch.nn.functional.normalize(z, dim=1)
    for i in range(len([k for k in state if k.startswith(f"{prefix}.net.") and k.endswith(".weight")])):
        weight, bias = state[f"{prefix}.net.{2 * i}.weight"].float(), state[f"{prefix}.net.{2 * i}.bias"].float()
        x = torch.nn.functional.leaky_relu(torch.nn.functional.linear(x, weight * lr_mul, bias * lr_mul), 0.2)
    return x


def test_the_truncation_centre_is_the_live_mapping_networks_mean_as_the_reference_computes_it(golden_dir, tmp_path,
                                                                                                caplog):
    import logging
    import shutil

    data = torch.load(str(golden_dir / "model_0.pt"), map_location="cpu", weights_only=True)
    state = data["GAN"]
    live = {k: v + 0.3 * v.float().std() * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
            for k, v in state.items() if k.startswith("S.net.")}  # a live network that differs from its average SE
    moved = tmp_path / "model_0.pt"
    torch.save({**data, "GAN": {**state, **live}}, str(moved))
    shutil.copy(golden_dir / ".config.json", tmp_path / ".config.json")
    checkpoint = import_reference(str(moved))
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(5))
    live_mean = _reference_mapping({**state, **live}, "S", z).mean(0)
    ema_mean = _reference_mapping(state, "SE", z).mean(0)
    spread = (live_mean - ema_mean).abs().max()
    assert spread > 1e-3
    assert (checkpoint.w_avg - live_mean).abs().max() < spread / 4
    assert checkpoint.metadata["w_avg"]["networks"].startswith("live mapping (S)")
    stripped = tmp_path / "stripped" / "model_0.pt"
    stripped.parent.mkdir()
    torch.save({**data, "GAN": {k: v for k, v in state.items() if not k.startswith("S.")}}, str(stripped))
    shutil.copy(golden_dir / ".config.json", stripped.parent / ".config.json")
    with caplog.at_level(logging.WARNING):
        assert import_reference(str(stripped)).metadata["w_avg"]["networks"].startswith("EMA mapping (SE)")
    assert "holds no live mapping network (S)" in caplog.text


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


def test_a_checkpoint_damaged_inside_a_stored_tensor_is_refused_not_imported_wrong(golden_dir, tmp_path):
    import zipfile

    data = bytearray((golden_dir / "model_0.pt").read_bytes())
    with zipfile.ZipFile(golden_dir / "model_0.pt") as archive:  # a bad copy: bytes of one weight flipped, zip intact
        entry = max(archive.infolist(), key=lambda info: info.file_size)
        start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    data[start + 100: start + 116] = bytes(b ^ 0xFF for b in data[start + 100: start + 116])
    broken = tmp_path / "model_0.pt"
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt \(its entry .* fails its checksum\): copy it"):
        import_reference(str(broken))
    for size in (1, 2):
        broken.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=rf"is empty or truncated \({size} bytes\): copy it again"):
            import_reference(str(broken))


def test_a_file_that_is_no_pytorch_checkpoint_is_named_as_such(tmp_path):
    text = tmp_path / "model_2.pt"
    text.write_text("case,index\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        import_reference(str(text))


def test_a_native_model_renamed_pt_is_named_as_one_that_needs_no_import(tmp_path):
    renamed = tmp_path / "model_2.pt"
    renamed.write_bytes(demo_model_path().read_bytes())
    with pytest.raises(CheckpointError, match="is already a CircleOfWillisGAN model .*: name it .safetensors and pass it"):
        import_reference(str(renamed))


def test_a_reference_checkpoint_named_safetensors_is_told_to_take_its_name_back_as_load_generator_tells_it(golden_dir,
                                                                                                          tmp_path):
    import re

    from CircleOfWillisGANLib.checkpoint import MISNAMED_PYTORCH
    from CircleOfWillisGANLib.generator import load_generator

    misnamed = tmp_path / "model_0.safetensors"
    misnamed.write_bytes((golden_dir / "model_0.pt").read_bytes())
    for load in (import_reference, load_generator):
        with pytest.raises(CheckpointError, match=re.escape(MISNAMED_PYTORCH)) as raised:
            load(str(misnamed))
        assert "corrupt" not in str(raised.value)


def _golden_state(golden_dir):
    return torch.load(golden_dir / "model_0.pt", map_location="cpu", weights_only=True)["GAN"]


def _same_model(a, b):
    return a.architecture == b.architecture and torch.equal(a.w_avg, b.w_avg) and a.state_dict.keys() == \
        b.state_dict.keys() and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_gan_wrapped_in_data_parallel_or_compiled_imports_the_same_model(golden_dir, tmp_path, prefix):
    wrapped = tmp_path / "model_0.pt"
    torch.save({"GAN": {prefix + key: value for key, value in _golden_state(golden_dir).items()}}, wrapped)
    assert _same_model(import_reference(str(wrapped)), import_reference(str(golden_dir / "model_0.pt")))


def test_a_reference_state_dict_saved_as_safetensors_imports_and_a_loader_points_there(golden_dir, tmp_path):
    from safetensors.torch import save_file

    stored = tmp_path / "model_0.safetensors"
    save_file({key: value.clone() for key, value in _golden_state(golden_dir).items()}, str(stored))
    assert _same_model(import_reference(str(stored)), import_reference(str(golden_dir / "model_0.pt")))
    with pytest.raises(CheckpointError, match="reference checkpoint's state dict .*: convert it with `cowgan "
                                              "import-reference"):
        load_generator(str(stored))
    save_file({"weight": torch.zeros(2)}, str(stored))
    with pytest.raises(CheckpointError, match="safetensors file without a reference generator"):
        import_reference(str(stored))


@pytest.mark.parametrize("name", ["model_0.pt", "model_0.safetensors"])
def test_a_zip_archive_that_is_no_pytorch_checkpoint_is_named_as_such_not_called_damaged(tmp_path, name):
    import zipfile

    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("readme.txt", "notes")
    for load in (import_reference, load_generator):
        with pytest.raises(CheckpointError, match="zip archive without a PyTorch pickle") as raised:
            load(str(archive))
        assert "corrupt" not in str(raised.value) and "rename" not in str(raised.value)


def test_a_folder_passed_as_the_checkpoint_or_config_is_named_as_a_folder(golden_dir):
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        import_reference(str(golden_dir))
    with pytest.raises(CheckpointError, match="config file .* is a folder"):
        import_reference(str(golden_dir / "model_0.pt"), config_path=golden_dir)


def test_a_folder_named_config_json_beside_the_checkpoint_is_named_not_taken_for_no_config(golden_dir, tmp_path):
    import shutil

    shutil.copy(golden_dir / "model_0.pt", tmp_path / "model_1.pt")
    (tmp_path / ".config.json").mkdir()
    with pytest.raises(CheckpointError, match="config file .*\\.config\\.json is a folder"):
        import_reference(str(tmp_path / "model_1.pt"))


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


@pytest.mark.parametrize("with_config", [True, False])
@pytest.mark.parametrize("damage, message", [
    (lambda gan: gan.pop("SE.net.0.weight"), "lacks SE.net.0.weight"),
    (lambda gan: gan.pop("SE.net.14.weight"), "lacks SE.net.14.weight"),  # the last layer: not a 7-layer mapping
    (lambda gan: [gan.pop(k) for k in list(gan) if k.startswith("GE.blocks.0.")], "lacks GE.blocks.0.conv1.weight"),
    (lambda gan: gan.pop("GE.blocks.4.conv1.weight"), "lacks GE.blocks.4.conv1.weight"),  # not a model of 4 blocks
    (lambda gan: gan.__setitem__("SE.net.0.weight", torch.zeros(64)), "expected 2 dimensions"),
    (lambda gan: gan.__setitem__("GE.blocks.1.conv2.weight", torch.zeros(8, 8, 1, 1, 1)),
     r"has shape \(8, 8, 1, 1, 1\), expected .*: the checkpoint is damaged or from another architecture"),
    (lambda gan: gan["GE.blocks.1.conv2.weight"].view(-1).__setitem__(0, float("nan")),
     "contains NaN or Inf: the run diverged or the file is damaged; use an earlier"),
    (lambda gan: gan.update({f"GE.attns.1.{i}.weight": torch.zeros(8, 8) for i in range(2)}),
     r"holds 2 generator tensor\(s\) this importer has no place for \(GE.attns.1.0.weight, GE.attns.1.1.weight\)"),
    (lambda gan: gan.__setitem__(7, torch.zeros(1)), "not a state dict of named tensors"),
])
def test_a_checkpoint_missing_or_mangling_a_tensor_gives_one_clear_error(golden_dir, tmp_path, damage, message,
                                                                         with_config):
    gan = torch.load(golden_dir / "model_0.pt", weights_only=True)["GAN"]
    assert "SE.net.14.weight" in gan and "GE.blocks.4.conv1.weight" in gan and "GE.blocks.5.conv1.weight" not in gan
    damage(gan)
    torch.save({"GAN": gan}, tmp_path / "model_5.pt")
    with pytest.raises(CheckpointError, match=message):
        import_reference(str(tmp_path / "model_5.pt"), str(golden_dir / ".config.json") if with_config else None)


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


@pytest.mark.parametrize("option", [{"attn_layers": [1]}, {"fq_layers": [1]}, {"no_const": True}])
def test_options_the_reference_code_cannot_build_are_refused_as_a_foreign_config(golden_dir, tmp_path, option):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 64, "network_capacity": 2, **option}))
    with pytest.raises(CheckpointError, match=f"{next(iter(option))}.*cannot build such a model.*pass the run's own"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


@pytest.mark.parametrize("foreign", [{}, {"config": {"batch": 8}, "architecture": {"latent_dim": 32},
                                          "dataset": {"count": 6}}, {"variants": {"acom_absent": False}}])
def test_a_json_file_that_is_no_reference_config_is_refused_not_recorded_as_the_runs(golden_dir, tmp_path, foreign):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(foreign))
    with pytest.raises(CheckpointError, match=r"config .*config.json is not a reference .config.json: it holds none of "
                                              r"its settings \(image_size, network_capacity, .*\): pass the run's own"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


def test_transparent_which_the_reference_grayscale_blocks_ignore_imports_the_same_model(golden_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**json.loads((golden_dir / ".config.json").read_text()), "transparent": True}))
    plain = import_reference(str(golden_dir / "model_0.pt"))
    transparent = import_reference(str(golden_dir / "model_0.pt"), str(config))
    assert all(torch.equal(plain.state_dict[k], transparent.state_dict[k]) for k in plain.state_dict)


def test_a_reference_run_below_32_slices_is_a_cube_as_the_reference_grows_it():
    from CircleOfWillisGANLib.reference_import import infer_architecture

    state = {f"SE.net.{2 * i}.weight": torch.zeros(16, 16) for i in range(2)}
    state.update({f"GE.blocks.{i}.conv1.weight": torch.zeros(c, c, 3, 3, 3) for i, c in enumerate((16, 8, 4))})
    arch = infer_architecture(state, {"image_size": 16, "network_capacity": 2})
    assert arch.output_shape == (16, 16, 16) and arch.generator_channels() == [16, 8, 4]


def test_a_run_of_edited_depth_imports_at_the_depth_given_with_the_same_tensors(golden_dir):
    default = import_reference(str(golden_dir / "model_0.pt"))
    thin = import_reference(str(golden_dir / "model_0.pt"), depth=16)
    assert thin.architecture.output_shape == (16, 64, 64)
    assert [thin.architecture.upsample_factors(b) for b in range(1, 5)] == [(2, 2, 2)] * 2 + [(1, 2, 2)] * 2
    assert all(torch.equal(default.state_dict[k], thin.state_dict[k]) for k in default.state_dict)
    gen = CoWGenerator(thin, "cpu")
    assert gen.generate(seeds=[3], precision="fp32").shape[-3:] == (16, 64, 64)
    for depth in (2, 48, 128, True):
        with pytest.raises(InputError, match=f"a depth of {depth!r} slices does not fit .* power of two from 4 to its "
                                             "image size 64 \\(the reference's is 32\\)"):
            import_reference(str(golden_dir / "model_0.pt"), depth=depth)


def _reference_discriminator(state, x):
    """The reference's discriminator as REFERENCE.md describes it, run on its own tensors: residual blocks (two 3x3x3
    convs + LeakyReLU, then the [1, 2, 1]^3 blur and a strided conv; a 1x1x1 strided skip; sum / sqrt 2), stride 2
    along depth in the first 4 blocks, final conv, flatten, linear."""
    import torch.nn.functional as F

    f = state["D.blocks.0.downsample.0.f"].float()
    kernel = (f[:, None, None] * f[None, :, None] * f[None, None, :]) / f.sum() ** 3
    i = 0
    while f"D.blocks.{i}.conv_res.weight" in state:
        b = f"D.blocks.{i}"
        down = f"{b}.downsample.1.weight" in state
        stride = (2 if i < 4 else 1, 2, 2) if down else (1, 1, 1)
        res = F.conv3d(x, state[f"{b}.conv_res.weight"], state[f"{b}.conv_res.bias"], stride=stride)
        x = F.leaky_relu(F.conv3d(x, state[f"{b}.net.0.weight"], state[f"{b}.net.0.bias"], padding=1), 0.2)
        x = F.leaky_relu(F.conv3d(x, state[f"{b}.net.2.weight"], state[f"{b}.net.2.bias"], padding=1), 0.2)
        if down:
            c = x.shape[1]
            x = F.conv3d(F.pad(x, (1,) * 6, mode="replicate"), kernel.expand(c, 1, 3, 3, 3), groups=c)
            x = F.conv3d(x, state[f"{b}.downsample.1.weight"], state[f"{b}.downsample.1.bias"], stride=stride, padding=1)
        x = (x + res) / 2 ** 0.5
        i += 1
    x = F.conv3d(x, state["D.final_conv.weight"], state["D.final_conv.bias"], padding=1)
    return F.linear(x.flatten(1), state["D.to_logit.weight"], state["D.to_logit.bias"])[:, 0]


def test_a_reference_runs_discriminator_and_live_networks_convert_for_fine_tuning(golden_dir, tmp_path):
    from CircleOfWillisGANLib.generator_model import GeneratorModel
    from CircleOfWillisGANLib.networks.discriminator import Discriminator
    from CircleOfWillisGANLib.reference_import import reference_networks

    arch, networks = reference_networks(str(golden_dir / "model_0.pt"))
    assert arch == import_reference(str(golden_dir / "model_0.pt")).architecture
    state = {k: v.float() for k, v in _golden_state(golden_dir).items()}
    D = Discriminator(arch)
    D.load_state_dict(networks["D"])
    volumes = torch.rand((2, 1, *arch.output_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the reference scores reals low, this project's losses high: the same judgement
        assert torch.allclose(D(volumes), -_reference_discriminator(state, volumes), rtol=1e-4, atol=1e-5)
    live, ema = GeneratorModel(arch), GeneratorModel(arch)
    live.load_state_dict(networks["G"])
    ema.load_state_dict(networks["G_ema"])
    assert torch.equal(live.state_dict()["synthesis.const"], state["G.initial_block"])
    assert torch.equal(ema.state_dict()["synthesis.const"], state["GE.initial_block"])
    stripped = {k: v for k, v in state.items() if not k.startswith(("D.", "D_aug."))}
    torch.save({"GAN": stripped}, tmp_path / "model_0.pt")
    with pytest.raises(CheckpointError, match="holds only the EMA generator .*cannot be trained on"):
        reference_networks(str(tmp_path / "model_0.pt"))


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


@pytest.mark.parametrize("lr_mlp", [1e308, 1e200])
def test_an_lr_mlp_that_makes_w_avg_overflow_is_named_instead_of_writing_a_model_that_looks_diverged(
        golden_dir, tmp_path, lr_mlp):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**json.loads((golden_dir / ".config.json").read_text()), "lr_mlp": lr_mlp}))
    with pytest.raises(CheckpointError, match=f"NaN or infinite values in .*w_avg.*lr_mlp {re.escape(repr(lr_mlp))} is likely not "
                                              "this run's .*pass the run's own .config.json"):
        import_reference(str(golden_dir / "model_0.pt"), str(config))


def test_a_missing_config_is_warned_about_but_a_missing_checkpoint_is_the_only_error(golden_dir, tmp_path, caplog):
    import shutil

    shutil.copy(golden_dir / "model_0.pt", tmp_path / "model_0.pt")
    with caplog.at_level("WARNING"):
        import_reference(str(tmp_path / "model_0.pt"))
    assert [r.getMessage() for r in caplog.records] == [
        f"no .config.json beside {tmp_path / 'model_0.pt'}: assuming the reference's defaults (lr_mlp 0.1); if the run "
        "used other settings, put its models/NAME/.config.json beside it (`cowgan import-reference` also takes --config "
        "CONFIG.json)"]
    caplog.clear()
    with pytest.raises(CheckpointError, match="does not exist"):
        import_reference(str(tmp_path / "model_9.pt"))
    assert not caplog.records
