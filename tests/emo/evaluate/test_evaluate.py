"""`python -m emo evaluate` end to end on a tiny random checkpoint, and the shipped demo model's targets."""

from __future__ import annotations

import json

import pytest

from emo.cli import main
from emo.evaluate.evaluation import TARGETS, EvaluationOptions, evaluate_checkpoint
from tests.emo.evaluate.frechet_networks import save_networks
from tests.helpers import REPO

DEMO_CHECKPOINT = REPO / "emo" / "assets" / "emo-demo.safetensors"


def test_evaluate_runs_end_to_end_and_writes_json(tiny_checkpoint, tmp_path, capsys):
    inception, i3d = save_networks(tmp_path)
    out = tmp_path / "report" / "eval.json"
    code = main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--count", "1", "--seconds", "1.4",
                 "--steps", "1", "--speeds", "0.2,0.7", "--json", str(out), "--fid-weights", str(inception),
                 "--fvd-weights", str(i3d), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in TARGETS:
        assert name in printed
    assert "overall: FAIL" in printed  # a random model does not talk
    report = json.loads(out.read_text())
    assert report["seeds"] == [1_000_000] and report["settings"]["frames_per_clip"] == 12
    assert set(report["metrics"]) == set(TARGETS)
    for name, entry in report["metrics"].items():
        assert set(entry) >= {"value", "ground_truth", "target", "passed"}
        # The targets are reachable: the ground-truth videos meet every one of them.
        comparison, threshold, _ = TARGETS[name]
        gt = entry["ground_truth"]
        assert {">=": gt >= threshold, "<=": gt <= threshold, "==": gt == threshold}[comparison], (name, gt)
    assert report["passed"] is False and report["metrics"]["lip_sync_correlation"]["passed"] is False
    assert len(report["talkers"]) == 1 and len(report["details"]["speed_control"]["motion"]) == 2
    # The measured angles of the ground-truth video follow its nods; a random model's head does not.
    assert report["details"]["head_angle_correlation_ground_truth"] > 0.95
    assert abs(report["details"]["head_angle_correlation"]) < 0.9
    assert report["frechet"]["fid"] >= 0 and report["frechet"]["fid_samples"] == 35
    assert report["frechet"]["fvd"] >= 0 and report["frechet"]["fvd_samples"] == 2


def test_evaluate_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    base = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--count", "1", "-q"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(base + ["--speeds", "slow,fast"]) == 2
    assert "--speeds must be comma-separated" in capsys.readouterr().err
    assert main(base + ["--seconds", "0.4"]) == 2  # 10 frames: no seam between clips of 12
    assert "clip seams" in capsys.readouterr().err
    assert main(base + ["--fid-weights", str(tmp_path / "inception.pt")]) == 2
    assert "never downloads" in capsys.readouterr().err
    garbage = tmp_path / "i3d_torchscript.pt"
    garbage.write_bytes(b"\x00" * 100)
    assert main(base + ["--seconds", "1.0", "--fvd-weights", str(garbage)]) == 2
    assert "FVD needs at least 2 clips" in capsys.readouterr().err
    assert main(base + ["--seconds", "1.4", "--fvd-weights", str(garbage)]) == 2  # found before generating
    assert "not a TorchScript file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_report():
    if not DEMO_CHECKPOINT.is_file():
        pytest.skip("the demo model emo/assets/emo-demo.safetensors is not trained and shipped yet")
    return evaluate_checkpoint(DEMO_CHECKPOINT, EvaluationOptions())


def test_shipped_demo_model_is_clearly_better_than_random(demo_report):
    """Regression guard. Measured 2026-11-21 on the shipped model (stage 3 on reference-box face
    masks, guidance 2.0): lip-sync 0.860 at offset 0, identity ratio 0.444; a random model of the
    same preset scores 0.022 (offset -1) and 1.43."""
    metrics = demo_report["metrics"]
    assert metrics["lip_sync_correlation"]["value"] >= 0.6
    assert metrics["lip_sync_offset"]["value"] == 0
    assert metrics["identity_ratio"]["value"] <= 1.0


def test_shipped_demo_model_meets_the_targets(demo_report):
    """The issue's targets, measured 2026-12-04 on the shipped model with its overlap of 4 frames
    between clips: lip-sync 0.874 (>= 0.8) at offset 0, identity ratio 0.443 (<= 0.5), head motion
    0.62 / 1.07 / 1.45 deg/frame at speeds 0.2 / 0.7 / 1.2 (rank 1, gain 0.826 >= 0.5; truth
    0.15 / 0.51 / 0.87, gain 0.72), seam ratio 1.30 (<= 1.5; 1.40 without the overlap). On the
    second held-out set (--first-seed 2000000) seam ratio 1.43 (1.67 without). The previous
    model reached a gain of 0.20 and failed."""
    metrics = demo_report["metrics"]
    assert demo_report["passed"], {name: entry["value"] for name, entry in metrics.items()}
    for name in TARGETS:
        assert metrics[name]["passed"], (name, metrics[name])


def test_shipped_demo_model_continues_the_motion_frames(demo_report):
    """A clip after a head turning in its motion frames follows it better than holding the last
    pose (measured 1.59 degrees against 3.98), and the head follows the true nod (0.74)."""
    continuation = demo_report["details"]["motion_continuation"]
    assert continuation["angle_error"] < continuation["hold_last_error"], continuation
    assert demo_report["details"]["head_angle_correlation"] > 0.5
