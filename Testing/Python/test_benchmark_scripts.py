"""The benchmark scripts refuse counts they cannot measure with one line naming the option, before any work."""

from __future__ import annotations

import sys

import pytest

from benchmark_scripts import load_benchmark


@pytest.mark.parametrize("script, argv, message", [
    ("phantom_speed", ["--n", "0"], "--n 0 and every --workers 1 2 must be at least 1"),
    ("phantom_speed", ["--n", "2", "--workers", "1", "0"], "every --workers 1 0 must be at least 1"),
    ("phantom_realism", ["--n-variants", "0"], "--n-variants 0 must be at least 1"),
    ("phantom_realism", ["--n-variants", "5", "--n-geometry", "-1"], "--n-geometry -1 at least 0"),
    ("named_directions", ["--classifier", "absent.safetensors", "--n", "-1"], "--n -1 must be at least 1"),
    ("explorer_latency", ["--repeats", "0"], "--repeats must be at least 1 (got 0)"),
    ("explorer_latency", ["--threads", "-1"], "positive count (got -1)"),
])
def test_a_count_that_cannot_be_measured_is_one_line_naming_its_option(monkeypatch, capsys, script, argv, message):
    module = load_benchmark(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])  # explorer_latency reads sys.argv
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv) if script != "explorer_latency" else module.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_resampling_real_label_maps_without_scipy_says_what_to_install(monkeypatch, tmp_path):
    from CircleOfWillisGANLib.errors import MissingDependencyError

    module = load_benchmark("phantom_realism")
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    with pytest.raises(MissingDependencyError, match="needs the Python package 'scipy'.*pip install scipy"):
        module.real_on_grid(tmp_path / "absent.nii.gz")
