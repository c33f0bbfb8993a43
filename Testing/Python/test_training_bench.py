"""`python -m training.bench`: times each kind of step and amortises them over the schedules."""

from __future__ import annotations

import pytest
import torch

from training.bench import bench, report, schedule_shares
from training.config import training_preset


def test_the_paper_schedule_mixes_gp_one_step_in_16_and_pl_one_in_32():
    shares = schedule_shares(training_preset("paper"))
    assert shares["reference_schedule"] == {"plain": 15 / 16, "gp": 1 / 16}
    assert shares["full_schedule"] == pytest.approx({"plain": 30 / 32, "gp": 1 / 32, "gp+pl": 1 / 32})


def test_the_tiny_benchmark_reports_speed_memory_and_flops():
    result = bench(training_preset("tiny"), torch.device("cpu"), steps=1, warmup=0)
    assert set(result["step_seconds"]) == {"plain", "gp", "gp+pl"}
    assert result["step_flops"]["gp+pl"] > result["step_flops"]["plain"] > 0
    for schedule in ("reference_schedule", "full_schedule"):
        assert result[schedule]["volumes_per_s"] == pytest.approx(4 / result[schedule]["step_seconds"])
        assert result[schedule]["tflops_per_s"] > 0
    assert result["peak_memory_gib"] > 0
    text = report(result)  # the tiny preset's TFLOP/s are about 0.004: shown, not rounded to 0.00
    assert "volumes/s" in text and f"{result['full_schedule']['tflops_per_s']:.3g} TFLOP/s" in text


def test_the_benchmark_trains_on_the_shape_it_is_given():
    cfg = training_preset("tiny")
    full = bench(cfg, torch.device("cpu"), steps=1, warmup=0)
    small = bench(cfg, torch.device("cpu"), steps=1, warmup=0, shape=(8, 16, 16))
    assert full["shape"] == [16, 32, 32] and small["shape"] == [8, 16, 16]
    assert small["step_flops"]["plain"] < full["step_flops"]["plain"] / 2
    from CircleOfWillisGANLib.benchmark import machine_description

    assert f"tiny at 8x16x16 on {machine_description(torch.device('cpu'))} (" in report(small)


def test_a_shape_that_is_not_powers_of_two_is_one_line_before_any_work(capsys):
    from training.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "tiny", "--shape", "16", "30", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "--shape: every output size must be a power of two" in err[-1]


def test_settings_the_machine_cannot_run_are_one_line_and_exit_code_2(capsys):
    from CircleOfWillisGANLib.errors import script_exit_code
    from training.bench import main

    for argv, message in ((["--device", "foo"], "unknown device 'foo'"),
                          (["--micro-batch", "3"], "batch 4 must be a positive multiple of micro_batch 3"),
                          (["--micro-batch", "0"], "batch 4 must be a positive multiple of micro_batch 0")):
        assert script_exit_code(lambda: main(["--preset", "tiny", "--no-flops", *argv]), "bench") == 2
        err = capsys.readouterr().err
        assert err.startswith("bench: error: ") and message in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "tiny", "--steps", "0"])
    assert exit_info.value.code == 2 and "--steps 0 must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:  # refused before the FLOP count, naming this command's option
            main(["--preset", "tiny", "--compile"])
        assert exit_info.value.code == 2 and "leave --compile out" in capsys.readouterr().err


def test_a_json_target_that_cannot_or_should_not_be_written_is_refused_before_the_benchmark(tmp_path, capsys,
                                                                                          monkeypatch):
    from CircleOfWillisGANLib.errors import script_exit_code
    import training.bench

    monkeypatch.setattr(training.bench, "bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    kept = tmp_path / "kept.json"
    kept.write_text("the user's file")
    for target, message in ((kept, "already exists: choose another file name, or pass --overwrite"),
                            (tmp_path, "is a folder: name a file in it"),
                            (tmp_path / "nowhere" / "b.json", "does not exist: create it first")):
        argv = ["--preset", "tiny", "--no-flops", "--json", str(target)]
        assert script_exit_code(lambda: training.bench.main(argv), "bench") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert kept.read_text() == "the user's file"
