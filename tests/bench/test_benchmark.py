"""The benchmark script runs end to end (tiny preset) and its optimised path matches the baseline."""

import json

from bench.benchmark import main


def test_benchmark_runs_and_optimised_matches_baseline(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--preset", "tiny", "--device", "cpu", "--frames", "3", "--steps", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["config"]: row for row in result["rows"]}
    assert set(rows) == {"baseline", "optimised"}
    assert rows["optimised"]["max_pixel_diff_vs_baseline"] < 1e-4
    # The baseline calls the backbone twice per step (separate guidance passes).
    assert rows["baseline"]["backbone_calls"] == 2 * rows["optimised"]["backbone_calls"]
    assert all(0 <= share <= 1 for share in rows["baseline"]["share"].values())
    assert rows["optimised"]["backbone_tflops"] > 0
