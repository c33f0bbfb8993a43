"""The native checkpoint: round trip, integrity check, and one clear error for every kind of bad file."""

from __future__ import annotations

import pytest
import torch

from CircleOfWillisGANLib.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from CircleOfWillisGANLib.errors import CheckpointError, OutputError


@pytest.fixture
def saved(tiny_generator, tmp_path):
    ckpt = tiny_generator.checkpoint
    path = tmp_path / "model.safetensors"
    directions = {"sefa": torch.randn(3, tiny_generator.arch.latent_dim)}
    save_checkpoint(path, Checkpoint(ckpt.architecture, ckpt.state_dict, ckpt.w_avg, {"name": "t"}, directions))
    return path


def test_round_trip_keeps_weights_metadata_and_directions(saved, tiny_generator):
    loaded = load_checkpoint(saved)
    assert loaded.architecture == tiny_generator.arch
    for key, value in tiny_generator.checkpoint.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)
    assert torch.equal(loaded.w_avg, tiny_generator.w_avg)
    assert loaded.directions["sefa"].shape == (3, tiny_generator.arch.latent_dim)
    assert loaded.metadata["name"] == "t" and len(loaded.sha256) == 64


def test_a_saved_model_is_readable_like_any_new_file_under_the_umask(saved):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_flipped_byte_fails_the_sha256_check(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(saved)


def test_a_truncated_file_gives_one_clear_error(saved):
    saved.write_bytes(saved.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(saved)


def test_a_truncated_file_whose_header_length_starts_like_a_pickle_is_still_called_truncated(tiny_generator, tmp_path):
    ckpt = tiny_generator.checkpoint
    path = tmp_path / "model.safetensors"
    for padding in range(256):  # one name length in 256 makes the header length's first byte 0x80, a pickle's
        save_checkpoint(path, Checkpoint(ckpt.architecture, ckpt.state_dict, ckpt.w_avg, {"name": "t" * padding}))
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_a_pytorch_pickle_points_to_import_reference(tmp_path):
    path = tmp_path / "model_5.safetensors"
    torch.save({"GAN": {}}, path)
    with pytest.raises(CheckpointError, match="import-reference"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello", b"\x10\x00\x00\x00\x00\x00\x00\x00{}garbage"])
def test_empty_and_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"P", b"PK\x03", b"\x80\x02"])  # cut downloads that begin like a PyTorch file
def test_a_file_too_short_for_any_model_is_called_truncated_not_a_misnamed_pytorch_file(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="the file is empty or truncated: re-download or re-export it"):
        load_checkpoint(path)


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_saving_into_a_missing_folder_writes_nothing(tiny_generator, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "m.safetensors", tiny_generator.checkpoint)
    assert not (tmp_path / "missing").exists()


def test_a_disk_that_fills_up_while_saving_is_one_line_and_keeps_the_old_file(tiny_generator, saved, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full_disk(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28) at path x")

    before = saved.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*model\.safetensors: No space left on device; choose"):
        save_checkpoint(saved, tiny_generator.checkpoint)
    assert saved.read_bytes() == before and [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_a_model_with_nan_weights_is_refused(tiny_generator, tmp_path):
    ckpt = tiny_generator.checkpoint
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    state["synthesis.const"][0, 0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.safetensors"
    save_checkpoint(path, Checkpoint(ckpt.architecture, state, ckpt.w_avg, {}))
    with pytest.raises(CheckpointError, match="NaN or infinite values in synthesis.const"):
        load_checkpoint(path)


def test_metadata_reads_back_as_it_was_saved_including_numpy_values(tiny_generator, tmp_path):
    import numpy as np

    ckpt = tiny_generator.checkpoint
    saved = Checkpoint(ckpt.architecture, ckpt.state_dict, ckpt.w_avg,
                       {"name": "t", "data": {"spacing_mm": np.array([0.5, 0.5, 0.8]), "count": np.int64(3)}, "pair": (1, 2)})
    save_checkpoint(tmp_path / "m.safetensors", saved)
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.metadata == saved.metadata
    assert loaded.metadata["data"] == {"spacing_mm": [0.5, 0.5, 0.8], "count": 3} and loaded.metadata["pair"] == [1, 2]


@pytest.mark.parametrize("change", ["missing weight", "wrong shape", "wrong w_avg"])
def test_weights_that_do_not_fit_the_stored_architecture_are_refused(tiny_generator, tmp_path, change):
    from CircleOfWillisGANLib.generator import load_generator

    ckpt = tiny_generator.checkpoint
    weights, w_avg = dict(ckpt.state_dict), ckpt.w_avg
    if change == "missing weight":
        weights.pop("synthesis.const")
    elif change == "wrong shape":
        weights["synthesis.const"] = torch.zeros(1, 3, 4, 4, 4)
    else:
        w_avg = torch.zeros(5)
    save_checkpoint(tmp_path / "m.safetensors", Checkpoint(ckpt.architecture, weights, w_avg, {"name": "t"}))
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_generator(tmp_path / "m.safetensors", device="cpu")


@pytest.mark.parametrize("key, what", [("cowgan_projection", "a projection result"),
                                       ("cowgan_variant_classifier", "a variant classifier"),
                                       ("other", "without CircleOfWillisGAN model metadata")])
def test_the_projects_other_safetensors_files_are_named_when_passed_as_a_model(tmp_path, key, what):
    from safetensors.torch import save_file

    path = tmp_path / "file.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={key: "{}"})
    with pytest.raises(CheckpointError, match=what):
        load_checkpoint(path)


def test_a_training_resume_state_passed_as_a_model_points_to_export(tmp_path):
    from CircleOfWillisGANLib.generator import load_generator
    from training.state import FORMAT

    path = tmp_path / "latest.pt"
    torch.save({"format": FORMAT, "G": {}}, path)
    with pytest.raises(CheckpointError, match="resume state.*cowgan export"):
        load_generator(str(path), device="cpu")


def _resigned(source, path, edit_metadata=None, edit_tensors=None):
    """A copy of a saved model with its metadata or tensors changed and its checksum made to fit again, as other
    software or another version could write it."""
    import json

    from safetensors import safe_open

    from CircleOfWillisGANLib.checkpoint import CHECKSUM_KEY, METADATA_KEY, content_sha256
    from CircleOfWillisGANLib.files import save_safetensors

    with safe_open(str(source), framework="pt") as f:
        metadata = json.loads(f.metadata()[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_metadata:
        edit_metadata(metadata)
    if edit_tensors:
        edit_tensors(tensors)
    text = json.dumps(metadata)
    save_safetensors(path, tensors, {METADATA_KEY: text, CHECKSUM_KEY: content_sha256(tensors, text)})
    return path


@pytest.mark.parametrize("edit", [
    lambda m: m.update(format_version="1"),
    lambda m: m.update(architecture=None),
    lambda m: m["architecture"].update(latent_dim=32.0),
    lambda m: m["architecture"].update(mapping_lr_mul="fast"),
    lambda m: m["architecture"].update(mapping_lr_mul=float("nan")),
    lambda m: m["architecture"].update(output_shape="16x32x32"),
    lambda m: m.update(data=[1, 2]),
    lambda m: m.update(data={"affine": "identity"}),
    lambda m: m.update(data={"spacing_mm": [0.6, 0.6, 1e300]}),
    lambda m: m.update(data={"normalisation": {"method": "percentile", "percentiles": [1]}}),
    lambda m: m.update(data={"normalisation": {"method": "percentile", "percentiles": ["a", "b"]}}),
    lambda m: m.update(data={"normalisation": {"method": "percentile", "percentiles": None}}),
    lambda m: m.update(data={"normalisation": {"method": "percentile", "percentiles": [99, float("nan")]}}),
    lambda m: m.update(data={"normalisation": {"method": None}}),
    lambda m: m.update(data={"normalisation": [1, 99]}),
])
def test_metadata_of_the_wrong_type_is_one_clear_error(saved, tmp_path, edit):
    from CircleOfWillisGANLib.generator import load_generator

    with pytest.raises(CheckpointError, match="has unreadable metadata .*: re-export it"):
        load_generator(_resigned(saved, tmp_path / "m.safetensors", edit_metadata=edit), device="cpu")


@pytest.mark.parametrize("normalisation", [
    None, "per-volume min-max to [0, 1]", {"method": "minmax"}, {"method": "percentile"},
    {"method": "percentile", "percentiles": [0.5, 99.9]},
])
def test_each_normalisation_the_project_records_loads(saved, tmp_path, normalisation):
    from CircleOfWillisGANLib.resources import demo_model_path

    def edit(metadata):
        metadata["data"] = {**metadata.get("data", {}), "normalisation": normalisation}

    assert load_checkpoint(_resigned(saved, tmp_path / "m.safetensors", edit_metadata=edit)).metadata["data"][
        "normalisation"] == normalisation
    assert load_checkpoint(demo_model_path()).metadata["data"]["normalisation"] == {"method": "minmax"}


@pytest.mark.parametrize("key, value, message", [
    ("directions.sefa", torch.zeros(3, 5), r"directions.sefa is torch.float32 of shape \(3, 5\)"),
    ("synthesis.const", None, "synthesis.const holds torch.int32 values"),
])
def test_tensors_of_the_wrong_kind_are_refused_when_loading(saved, tmp_path, key, value, message):
    def edit(tensors):
        tensors[key] = tensors[key].to(torch.int32) if value is None else value

    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_resigned(saved, tmp_path / "m.safetensors", edit_tensors=edit))


@pytest.mark.parametrize("edit", [
    lambda m: m.update(format_version=2, architecture={**m["architecture"], "noise_mode": "per-layer-v2"}),
    lambda m: (m.update(format="cowgan-generator-int8"), m.pop("architecture")),
])
def test_a_newer_or_other_format_is_told_to_upgrade_even_when_its_fields_are_new(saved, tmp_path, edit):
    with pytest.raises(CheckpointError, match="this software reads 'cowgan-generator' up to v1: upgrade CircleOfWillisGAN"):
        load_checkpoint(_resigned(saved, tmp_path / "m.safetensors", edit_metadata=edit))


def test_a_scalar_tensor_is_checksummed_and_refused_as_unexpected_not_a_crash(saved, tmp_path):
    def edit(tensors):
        tensors["step"] = torch.tensor(1000.0)

    with pytest.raises(CheckpointError, match="does not match its architecture .*unexpected step"):
        load_checkpoint(_resigned(saved, tmp_path / "m.safetensors", edit_tensors=edit))


def test_model_metadata_without_its_checksum_is_called_that(saved, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from CircleOfWillisGANLib.checkpoint import METADATA_KEY

    with safe_open(str(saved), framework="pt") as f:
        metadata, tensors = f.metadata()[METADATA_KEY], {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={METADATA_KEY: metadata})
    with pytest.raises(CheckpointError, match="has no sha256 checksum .*: re-download or re-export it"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_a_file_cut_inside_its_header_is_called_truncated(saved):
    saved.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"the file is truncated \(its header alone needs [\d,]+ bytes, the file has 200\)"):
        load_checkpoint(saved)


def test_a_model_that_overflows_is_blamed_for_its_nan_volumes_not_the_seeds(saved, tmp_path):
    from CircleOfWillisGANLib.generator import load_generator

    def edit(tensors):  # finite weights (the load check passes) whose products overflow
        for key in ("synthesis.blocks.3.to_image.weight", "synthesis.blocks.3.to_image.affine.bias"):
            tensors[key] = torch.full_like(tensors[key], 3e38)

    gen = load_generator(_resigned(saved, tmp_path / "m.safetensors", edit_tensors=edit), device="cpu")
    with pytest.raises(CheckpointError, match="makes NaN or infinite volumes from ordinary w .*: the model is damaged"):
        gen.generate(seeds=[1], precision="fp32")


@pytest.mark.parametrize("entry, change", [(0, {"layers": [0, 9]}), (1, {"sigma": float("nan")}),
                                           (2, {"sigma": -1.0}), (3, {"row": 7})])
def test_cached_directions_that_do_not_fit_the_model_are_computed_anew(tmp_path, caplog, entry, change):
    from CircleOfWillisGANLib.directions import apply_directions, directions_for
    from CircleOfWillisGANLib.generator import load_generator
    from CircleOfWillisGANLib.resources import demo_model_path

    ckpt = load_checkpoint(demo_model_path())
    ckpt.metadata["directions"]["entries"][entry].update(change)
    save_checkpoint(tmp_path / "model.safetensors", ckpt)
    gen = load_generator(tmp_path / "model.safetensors", device="cpu")
    directions = directions_for(gen)
    assert all(0 <= block < gen.num_ws for d in directions for block in d.layers)
    assert all(d.sigma > 0 for d in directions) and f"cached latent direction {entry + 1} is unusable" in caplog.text
    moved = apply_directions(gen.styles(seeds=[1]), directions, [1.0] * len(directions))
    assert torch.isfinite(moved).all()


def test_a_native_model_renamed_pt_is_read_by_its_content(tmp_path):
    from CircleOfWillisGANLib.generator import load_generator
    from CircleOfWillisGANLib.resources import demo_model_path

    renamed = tmp_path / "model_3.pt"
    renamed.write_bytes(demo_model_path().read_bytes())
    assert load_generator(renamed, device="cpu").checkpoint.sha256 == load_checkpoint(demo_model_path()).sha256


@pytest.mark.parametrize("name, content, message", [
    ("model.safetensors", b"hello\n", r"it is a text file \(6 bytes\), not a model"),
    ("model.safetensors", b"case,index\nA,1\n", r"it is a text file \(15 bytes\), not a model"),
    ("model_2.pt", b"case,index\nA,1\n", r"it is a text file \(15 bytes\), not a model"),
])
def test_a_text_file_passed_as_a_model_is_called_a_text_file(tmp_path, name, content, message):
    from CircleOfWillisGANLib.generator import load_generator

    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_generator(tmp_path / name, device="cpu")


def test_a_reference_checkpoint_named_safetensors_is_told_to_take_back_its_pt_name(golden_dir, tmp_path):
    from CircleOfWillisGANLib.generator import load_generator

    misnamed = tmp_path / "model_0.safetensors"
    misnamed.write_bytes((golden_dir / "model_0.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"it is a PyTorch checkpoint \(a reference model_N.pt\) named like a "
                                              r"native model: rename it to .pt"):
        load_generator(misnamed, device="cpu")
