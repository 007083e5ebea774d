"""bench/speed_from_audio.py, part 1 (no model): the curve follows the energy of the bundled
voice and of the synthetic song, within its bounds and without jumps."""

import json

from bench.speed_from_audio import CURVE, main, passages, song
from emo.speed_from_audio import speed_from_audio


def test_the_curve_follows_the_energy(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["--no-model", "--seconds", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["audio"] for r in report["curves"]] == ["sample_voice.wav", "synthetic song"]
    for row in report["curves"]:
        assert row["corr_smoothed_rms"] > 0.9 and row["corr_rms"] > 0.3
        # float32 speeds: 1.2 is stored as 1.2000000477
        assert CURVE["min_speed"] - 1e-6 <= row["speed_min"] <= row["speed_max"] <= CURVE["max_speed"] + 1e-6
        assert row["max_step"] < 0.05
    assert "| synthetic song | 4.0 |" in capsys.readouterr().out


def test_the_song_nods_more_in_its_loud_passages():
    speeds = speed_from_audio(song(8.0), 16000, 25.0, 200, **CURVE).numpy()
    loud, quiet = passages(200)
    assert speeds[loud].mean() > speeds[quiet].mean() + 0.4
