"""bench/paste_back.py on the astronaut photos: the photo is untouched outside the mask, a hard
paste shows its edge, the feathered, colour-matched paste stays within the photo's own detail."""

import pytest

pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")

from bench.paste_back import format_rows, run  # noqa: E402


def test_the_feather_hides_the_edge_on_both_photo_shapes():
    rows = run(frame_count=1, demo=False)
    assert {(r["photo"], r["frames"]) for r in rows} == {(photo, f"stand-in {size} px") for photo in
                                                         ("1920x1080", "1080x1920") for size in (512, 64)}
    for row in rows:
        assert row["outside_error"] == 0.0
        if row["mode"] == "hard edge":
            assert row["seam_ratio"] > 5
        if row["mode"] == "feathered":
            assert row["ramp_colour_offset"] > 0.07  # the stand-ins are 0.08 brighter
        if row["mode"] == "feathered + colour":
            assert row["ramp_colour_offset"] < 0.005
            if row["frames"] == "stand-in 512 px":
                assert row["seam_ratio"] < 1
            else:
                # A 64 px square blown up 8x is soft against the photo's own detail: where the
                # crop's side crosses sharp structure, that shows (measured 1.0 and 2.8, against
                # 6.7 and 7.1 for a hard edge).
                assert row["seam_ratio"] < 3.5
    assert len(format_rows(rows)) == len(rows) + 2
