"""`cowgan phantoms`: files per case, manifest, preview, determinism across workers, user errors."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from CircleOfWillisGANLib.errors import OutputError
from CircleOfWillisGANLib.mip import GAP, contact_sheet
from CircleOfWillisGANLib.volume_io import load_volume
from cowgan.main import main

SMALL = ["--shape", "16", "64", "64", "--spacing", "1.0"]


def test_a_set_has_image_label_and_json_per_case_a_manifest_and_a_preview(tmp_path):
    assert main(["phantoms", "--n", "3", "--out", str(tmp_path), "--seed", "4", "--preview", *SMALL]) == 0
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert [r["case"] for r in rows] == ["phantom_00000", "phantom_00001", "phantom_00002"]
    for row in rows:
        image, affine = load_volume(tmp_path / row["image"])
        labels, _ = load_volume(tmp_path / row["label"])
        assert image.shape == labels.shape == (16, 64, 64) and 0.0 <= image.min() and image.max() <= 1.0
        sidecar = json.loads((tmp_path / row["params"]).read_text())
        assert sidecar["set_seed"] == 4 and "landmarks_mm" in sidecar["params"]
        assert "".join(map(str, sidecar["topcow_variants"]["anterior"])) == row["anterior"]
        assert np.allclose(np.diag(affine)[:3], 1.0)
    assert (tmp_path / "preview.png").stat().st_size > 0


def test_files_are_identical_whatever_the_worker_count(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["phantoms", "--n", "3", "--out", str(one), "--seed", "8", "--workers", "1", *SMALL]) == 0
    assert main(["phantoms", "--n", "3", "--out", str(two), "--seed", "8", "--workers", "2", *SMALL]) == 0
    for name in ("phantom_00002_image.nii.gz", "phantom_00002_label.nii.gz", "phantom_00002.json", "manifest.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_a_folder_holding_a_set_is_kept_unless_overwrite_replaces_the_whole_set(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's own notes")
    assert main(["phantoms", "--n", "3", "--out", str(tmp_path), "--seed", "1", *SMALL]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), "--seed", "2", *SMALL]) == 2
    assert "already holds a phantom set (10 files" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), "--seed", "2", "--no-compress", *SMALL, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.csv", "notes.txt", "phantom_00000.json", "phantom_00000_image.nii", "phantom_00000_label.nii"]
    assert notes.read_text() == "the user's own notes"


def test_a_users_own_manifest_or_preview_is_never_taken_for_a_set_nor_replaced(tmp_path, capsys):
    mine = {"manifest.csv": "patient,notes\nP1,my precious\n", "preview.png": "my own picture"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
    for extra in ([], ["--overwrite"], ["--preview", "--overwrite"]):
        assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL, *extra]) == 2
        assert "manifest.csv is not part of a phantom set and a new set would replace it" in capsys.readouterr().err
    (tmp_path / "manifest.csv").unlink()
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL, "--preview", "--overwrite"]) == 2
    assert "preview.png is not part of a phantom set" in capsys.readouterr().err
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL, "--overwrite"]) == 0
    assert main(["phantoms", "--n", "2", "--out", str(tmp_path), *SMALL, "--overwrite"]) == 0
    assert (tmp_path / "preview.png").read_text() == mine["preview.png"]
    assert sorted(p.name for p in tmp_path.glob("phantom_*.json")) == ["phantom_00000.json", "phantom_00001.json"]
    (tmp_path / "preview.png").unlink()
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL, "--preview", "--overwrite"]) == 0
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL, "--preview", "--overwrite"]) == 0  # its own


def test_force_makes_every_case_a_fetal_pca(tmp_path):
    assert main(["phantoms", "--n", "3", "--out", str(tmp_path), "--force", "fetal_pca_left", *SMALL]) == 0
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert all(r["fetal_pca_left"] == "1" and r["posterior"][0] == "1" for r in rows)


def test_variant_overrides_and_tables_are_checked_with_a_one_line_error(tmp_path, capsys):
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), "--variant", "fetal_pca=0.5"]) == 2
    assert "unknown variant fetal_pca" in capsys.readouterr().err
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), "--variant", "acom_absent=high"]) == 2
    assert "NAME=PROBABILITY" in capsys.readouterr().err
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"third_a2": 1.5}))
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), "--variant-table", str(table)]) == 2
    assert "not in [0, 1]" in capsys.readouterr().err


def test_a_variant_table_json_changes_the_prevalences(tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"acom_absent": 0.9, "a1_hypoplastic_left": 0.0, "a1_hypoplastic_right": 0.0,
                                 "third_a2": 0.0, "acom_duplicated": 0.0}))
    out = tmp_path / "set"
    assert main(["phantoms", "--n", "4", "--out", str(out), "--variant-table", str(table), *SMALL]) == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert sum(r["acom_absent"] == "1" for r in rows) >= 3


def test_long_captions_are_shortened_to_their_tile_instead_of_running_into_the_next():
    from PIL import Image, ImageDraw

    captions = ["phantom_00012", "phantom_00013"]
    assert ImageDraw.Draw(Image.new("L", (1, 1))).textlength(captions[0]) > 48
    sheet = contact_sheet([np.zeros((40, 48), np.uint8)] * 2, columns=2, captions=captions)
    caption_rows = sheet[40:]
    assert caption_rows[:, 48:48 + GAP + 2].max() == 0
    assert caption_rows[:, :48].max() > 0 and caption_rows[:, 48 + GAP + 2:].max() > 0


def test_phantoms_whose_grid_cuts_part_of_the_circle_off_are_marked_and_named(tmp_path, caplog):
    import logging

    from CircleOfWillisGANLib.variant_classifier import _recorded_variants

    with caplog.at_level(logging.WARNING):
        assert main(["phantoms", "--n", "5", "--out", str(tmp_path), "--seed", "5", "--shape", "16", "64", "64"]) == 0
    rows = {r["case"]: r for r in csv.DictReader((tmp_path / "manifest.csv").open())}
    assert [c for c, r in rows.items() if r["circle_in_view"] == "0"] == ["phantom_00004"]
    cut = json.loads((tmp_path / "phantom_00004.json").read_text())
    assert cut["params"]["circle_in_view"] is False and cut["topcow_variants"] != {
        "anterior": [int(not cut["variants"]["a1_absent_left"]), int(not cut["variants"]["acom_absent"]),
                     int(cut["variants"]["third_a2"]), int(not cut["variants"]["a1_absent_right"])],
        "posterior": [int(not cut["variants"]["pcom_absent_left"]), int(not cut["variants"]["p1_absent_left"]),
                      int(not cut["variants"]["p1_absent_right"]), int(not cut["variants"]["pcom_absent_right"])]}
    assert "1 of 5 phantoms do not show their whole circle on this grid (phantom_00004)" in caplog.text
    assert _recorded_variants(tmp_path / "phantom_00004.json") is None  # the classifier reads its label map instead
    assert _recorded_variants(tmp_path / "phantom_00000.json") is not None


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_an_overwrite_that_cannot_run_keeps_the_old_set(tmp_path, monkeypatch, capsys):
    out = tmp_path / "set"
    assert main(["phantoms", "--n", "2", "--out", str(out), "--preview", *SMALL]) == 0
    before = _snapshot(out)
    for name in ("scipy", "scipy.ndimage"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["phantoms", "--n", "1", "--out", str(out), *SMALL, "--overwrite"]) == 2
    assert "cowgan phantoms needs the Python package 'scipy'" in capsys.readouterr().err
    assert _snapshot(out) == before


def _failing_on_case(index, exc, monkeypatch):
    from CircleOfWillisGANLib.phantoms import writer

    write_case = writer.write_case

    def failing(out, seed, i, *args):
        if i == index:
            raise exc
        return write_case(out, seed, i, *args)

    monkeypatch.setattr(writer, "write_case", failing)


def test_a_run_that_fails_midway_leaves_the_old_set_and_creates_no_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "set"
    assert main(["phantoms", "--n", "2", "--out", str(out), *SMALL]) == 0
    (out / "notes.txt").write_text("the user's own notes")
    before = _snapshot(out)
    _failing_on_case(1, OutputError("cannot write phantom_00001.json: No space left on device"), monkeypatch)
    assert main(["phantoms", "--n", "3", "--out", str(out), "--seed", "9", *SMALL, "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert main(["phantoms", "--n", "3", "--out", str(tmp_path / "new" / "deeper"), *SMALL]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_an_interrupted_run_leaves_no_output_and_can_simply_be_run_again(tmp_path, monkeypatch):
    out = tmp_path / "set"
    _failing_on_case(1, KeyboardInterrupt(), monkeypatch)
    assert main(["phantoms", "--n", "3", "--out", str(out), *SMALL]) == 130
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert main(["phantoms", "--n", "3", "--out", str(out), *SMALL]) == 0
    assert len(list(out.iterdir())) == 10


@pytest.mark.parametrize("n, workers, shape, started", [
    ("500", "2", SMALL, lambda folder: len(list(folder.rglob("phantom_*.json"))) >= 4),  # busy writing cases
    ("2", "3", ["--shape", "64", "256", "256"],  # one worker idle, waiting for a case that never comes, while
     lambda folder: any(folder.iterdir())),          # two write cases large enough to take seconds
], ids=["busy-workers", "an-idle-worker"])
def test_ctrl_c_with_workers_stops_every_process_without_tracebacks_or_output(tmp_path, n, workers, shape, started):
    command = [sys.executable, "-m", "cowgan", "phantoms", "--n", n, "--out", str(tmp_path / "set"),
               "--workers", workers, *shape]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not started(tmp_path):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the workers have started
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches the parent and its workers
        _, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and err.strip() == "cowgan: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_a_set_over_a_million_phantoms_is_refused_before_anything_is_made(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["phantoms", "--n", "1000001", "--out", str(out), *SMALL]) == 2
    assert "--n 1000001 is too many: a set holds at most 1,000,000 phantoms" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_new_set_that_cannot_take_the_old_sets_place_puts_the_old_set_back(tmp_path, capsys):
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path), *SMALL]) == 0
    (tmp_path / "phantom_00001.json").mkdir()  # a folder of the user's where the new set needs a file
    before = _snapshot(tmp_path)
    assert main(["phantoms", "--n", "2", "--out", str(tmp_path), "--seed", "3", *SMALL, "--overwrite"]) == 2
    assert "phantom_00001.json: Is a directory); the old set is kept" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def _ended_process_id():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_rerun_deletes_the_stages_that_killed_runs_left_and_keeps_those_of_running_ones(tmp_path):
    host = socket.gethostname()
    killed_new = tmp_path / f".set.partial-{host}@{_ended_process_id()}"  # a first run's stage, beside its --out
    killed_new.mkdir()
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path / "set"), *SMALL]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    killed = tmp_path / "set" / f".phantoms-partial-{host}@{_ended_process_id()}-x1y2"  # a run replacing a set
    running = [tmp_path / "set" / f".phantoms-partial-{host}@{os.getppid()}-a1b2",
               tmp_path / "set" / f".phantoms-partial-{host}-2@{_ended_process_id()}-c3d4"]  # another host's: kept
    for stage in [killed, *running]:
        stage.mkdir()
        (stage / "phantom_00000_image.nii.gz").write_bytes(b"half a case")
    assert main(["phantoms", "--n", "2", "--out", str(tmp_path / "set"), *SMALL, "--overwrite"]) == 0
    assert not killed.exists() and all(stage.exists() for stage in running)


def test_a_worker_count_above_four_per_cpu_is_refused_before_any_process_starts(tmp_path, capsys, monkeypatch):
    import CircleOfWillisGANLib.phantoms.writer as writer

    monkeypatch.setattr(writer.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(writer, "ProcessPoolExecutor", None)  # a pool started at all would fail the run
    assert main(["phantoms", "--n", "2", "--out", str(tmp_path / "set"), "--workers", "10000", *SMALL]) == 2
    assert "--workers 10000 is too many: this machine has 2 CPUs, so use at most 8" in capsys.readouterr().err
    assert not (tmp_path / "set").exists()


def test_no_more_workers_start_than_there_are_cases(tmp_path, monkeypatch):
    import CircleOfWillisGANLib.phantoms.writer as writer

    started = []

    class Pool(writer.ProcessPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            started.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(writer, "ProcessPoolExecutor", Pool)
    assert main(["phantoms", "--n", "2", "--out", str(tmp_path / "two"), "--workers", "3", *SMALL]) == 0
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path / "one"), "--workers", "3", *SMALL]) == 0
    assert started == [2]


def test_prepare_refuses_the_same_worker_counts_and_starts_no_more_workers_than_files(tmp_path, capsys, monkeypatch):
    import training.prepare as prepare
    from CircleOfWillisGANLib.preprocess import PrepareOptions
    from training_fixtures import write_tube_volumes

    write_tube_volumes(tmp_path / "in", 1, (16, 32, 32))
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(prepare.concurrent.futures, "ProcessPoolExecutor", None)  # a pool would fail the run
    assert main(["prepare", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "ds"), "--shape", "16", "32", "32",
                 "--workers", "10000", "--no-progress"]) == 2
    assert "--workers 10000 is too many: this machine has 2 CPUs, so use at most 8" in capsys.readouterr().err
    manifest = prepare.prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=(16, 32, 32)),
                                       workers=3, progress=False)
    assert manifest["count"] == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_prepare_without_simpleitk_says_how_to_install_it_before_any_worker_starts(tmp_path, capsys, monkeypatch,
                                                                                    workers):
    import training.prepare as prepare
    from training_fixtures import write_tube_volumes

    write_tube_volumes(tmp_path / "in", 2, (16, 32, 32))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # as if it were not installed
    monkeypatch.setattr(prepare.concurrent.futures, "ProcessPoolExecutor", None)  # a pool would fail the run
    assert main(["prepare", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "ds"), "--shape", "16", "32", "32",
                 "--workers", workers, "--no-progress"]) == 2
    assert "needs the Python package 'SimpleITK', which is not installed: run `pip install SimpleITK`" in \
        capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("seed", ["99999999999999999999", "4294967296", "-1"])
def test_a_seed_outside_the_range_every_command_takes_is_refused_in_one_line(tmp_path, capsys, seed):
    assert main(["phantoms", "--n", "1", "--out", str(tmp_path / "set"), "--seed", seed, *SMALL]) == 2
    assert f"seed {seed} is out of range: use whole numbers from 0 to 4294967295" in capsys.readouterr().err
    assert not (tmp_path / "set").exists()
