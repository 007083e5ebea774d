"""The scheduler study runs end to end on a tiny random checkpoint, and its "quality holds" rule
picks the right step count."""

import json
import math

import pytest
import torch

from bench.schedulers import HoldRule, main, parse_reference, parse_steps, smallest_holding_steps


@pytest.fixture(scope="module")
def study(tiny_checkpoint, tmp_path_factory):
    """2 schedulers x 2 step counts, 1 short talker; DDIM at 3 steps is also the reference."""
    out = tmp_path_factory.mktemp("study") / "study.json"
    # One thread: the tensors are tiny, and on a machine busy with other jobs a second OpenMP
    # thread makes every op wait for a descheduled partner (measured 200 s instead of 5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--checkpoint", str(tiny_checkpoint), "--schedulers", "ddim,dpmpp_2m", "--steps", "2,3",
                     "--reference", "ddim:3", "--talkers", "1", "--seconds", "0.6", "--device", "cpu",
                     "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_report_structure(study):
    assert study["format"] == "emo-scheduler-study"
    assert study["reference"]["scheduler"] == "ddim" and study["reference"]["steps"] == 3
    assert [(row["scheduler"], row["steps"]) for row in study["rows"]] == [
        ("ddim", 2), ("ddim", 3), ("dpmpp_2m", 2), ("dpmpp_2m", 3)]
    for row in study["rows"]:
        for key in ("psnr", "psnr_min", "mean_abs_diff", "lip_sync_correlation", "identity_distance",
                    "seconds_per_frame", "step_speedup", "measured_speedup"):
            assert isinstance(row[key], float), key
        assert isinstance(row["holds"], bool)
        assert len(row["talkers"]) == 1
        assert row["seconds_per_frame"] > 0
    assert set(study["summary"]) == {"ddim", "dpmpp_2m"}
    assert study["seeds"] == [1_000_000]
    assert "lip-sync" in study["rule"]["description"]


def test_reference_against_itself_is_identical(study):
    """DDIM at 3 steps run again gives the reference's frames: the study is deterministic."""
    again = next(row for row in study["rows"] if (row["scheduler"], row["steps"]) == ("ddim", 3))
    assert math.isinf(again["psnr"]) and math.isinf(again["psnr_min"])
    assert again["mean_abs_diff"] == 0.0
    assert again["step_speedup"] == 1.0
    assert again["lip_sync_correlation"] == pytest.approx(study["reference"]["lip_sync_correlation"])


def test_other_step_counts_and_schedulers_differ(study):
    others = [row for row in study["rows"] if (row["scheduler"], row["steps"]) != ("ddim", 3)]
    assert all(math.isfinite(row["psnr"]) and row["mean_abs_diff"] > 0 for row in others)
    assert len({row["mean_abs_diff"] for row in others}) == len(others)


def _row(steps, lip, identity, psnr=40.0):
    return {"steps": steps, "lip_sync_correlation": lip, "identity_distance": identity, "psnr": psnr}


REFERENCE = {"lip_sync_correlation": 0.80, "identity_distance": 0.40}


def test_rule_picks_the_smallest_count_from_which_every_larger_count_holds():
    rule = HoldRule()  # lip >= 0.75, identity <= 0.44, PSNR >= 35 dB
    rows = [_row(40, 0.80, 0.40, psnr=math.inf), _row(5, 0.78, 0.41),  # 5 holds by luck: 10 does not
            _row(10, 0.70, 0.41), _row(20, 0.76, 0.43), _row(15, 0.79, 0.45)]
    assert smallest_holding_steps(rows, REFERENCE, rule) == 20
    rows[4] = _row(15, 0.79, 0.44)
    assert smallest_holding_steps(rows, REFERENCE, rule) == 15
    rows[2] = _row(10, 0.76, 0.41)
    assert smallest_holding_steps(rows, REFERENCE, rule) == 5
    # The PSNR floor is a condition of its own; 0 drops it.
    rows[1] = _row(5, 0.78, 0.41, psnr=30.0)
    assert smallest_holding_steps(rows, REFERENCE, rule) == 10
    assert smallest_holding_steps(rows, REFERENCE, HoldRule(min_psnr=0)) == 5
    assert smallest_holding_steps(rows, REFERENCE, HoldRule(min_psnr=45.0)) == 40


def test_rule_returns_none_when_nothing_holds():
    rows = [_row(10, 0.5, 0.40), _row(20, 0.80, 0.60), _row(30, float("nan"), 0.40)]
    assert smallest_holding_steps(rows, REFERENCE, HoldRule()) is None
    assert smallest_holding_steps([], REFERENCE, HoldRule()) is None


def test_bad_scheduler_name_is_a_clear_error(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tiny_checkpoint), "--schedulers", "ddim,dpm_fast", "--talkers", "1"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "unknown scheduler(s) 'dpm_fast'" in message and "dpmpp_2m" in message


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="SCHEDULER:STEPS"):
        parse_reference("ddim")
    with pytest.raises(ValueError, match="SCHEDULER:STEPS"):
        parse_reference("ddim:20,40")
    with pytest.raises(ValueError, match="unknown scheduler"):
        parse_reference("fast:10")
    with pytest.raises(ValueError, match=">= 1"):
        parse_steps("0,10")
    with pytest.raises(ValueError, match="whole numbers"):
        parse_steps("ten")


def test_too_short_talkers_are_a_clear_error(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tiny_checkpoint), "--talkers", "1", "--seconds", "0.2"])
    assert "give --seconds >=" in capsys.readouterr().err
