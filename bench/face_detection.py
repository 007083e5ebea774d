"""Face detection recall: the default detector (MTCNN, emo.faces.detect) against OpenCV's Haar
cascade (emo.face.detect_face_boxes, the detector the pipeline used before), on the same images.

    OMP_NUM_THREADS=1 python bench/face_detection.py [--grid full|sample] [--json out.json]

Images: every framing of tests/emo/faces/framings.py (the astronaut's face scaled from 40 px
to 80% of the frame, placed at the centre, corners and off-centre of 1920x1080, 640x360 and
1080x1920 canvases over real photos, turned by +-15 degrees, mirrored, dimmed and brightened),
and the 100 face and 100 non-face crops of scikit-image's LFW subset (25 px, enlarged 4x with
context; a face there counts as found at IoU >= 0.4 with its crop). A face counts as found when a detection
overlaps its box with IoU >= 0.5 (MTCNN's and Haar's boxes frame the face slightly differently,
so 0.5 rather than 0.6 for the comparison); any detection overlapping no face (IoU < 0.3) is a
false positive. Times are per image on one thread.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo.face import detect_face_boxes  # noqa: E402
from emo.faces.detect import detect_faces  # noqa: E402
from tests.emo.faces.framings import full_grid, iou, lfw_cases, sample_grid  # noqa: E402

FOUND_IOU = 0.5
FALSE_POSITIVE_IOU = 0.3
LFW_FOUND_IOU = 0.4


def mtcnn_boxes(rgb: np.ndarray) -> list[tuple[float, ...]]:
    return [face.box for face in detect_faces(rgb)]


def haar_boxes(rgb: np.ndarray) -> list[tuple[float, ...]]:
    return [tuple(map(float, box)) for box in detect_face_boxes(torch.from_numpy(rgb).float() / 255.0)]


DETECTORS = {"MTCNN": mtcnn_boxes, "Haar": haar_boxes}


def evaluate(cases, detector) -> list[dict]:
    """cases: (labels dict, rgb, list of true boxes); returns one record per case."""
    records = []
    for labels, rgb, truths in cases:
        start = time.perf_counter()
        boxes = detector(rgb)
        seconds = time.perf_counter() - start
        best = [max((iou(box, truth) for box in boxes), default=0.0) for truth in truths]
        false = sum(1 for box in boxes if all(iou(box, truth) < FALSE_POSITIVE_IOU for truth in truths))
        records.append({**labels, "faces": len(truths), "found": sum(b >= labels.get("found_iou", FOUND_IOU) for b in best),
                        "best_iou": best, "false_positives": false, "seconds": seconds})
    return records


def framing_cases(grid):
    for framing in grid:
        rgb, box = framing.render()
        yield ({"set": "framings", "canvas": framing.canvas, "face": str(framing.face_height),
                "placement": framing.placement, "rotation": f"{framing.rotation:+g}",
                "flip": "mirrored" if framing.flip else "as shot", "lighting": framing.lighting}, rgb, [box])


def lfw_labelled():
    # The crop box is larger than a face box (it holds some hair and background): 0.4 suffices.
    for index, rgb, is_face, crop_box in lfw_cases():
        yield ({"set": "LFW faces" if is_face else "LFW non-faces", "index": index, "found_iou": LFW_FOUND_IOU},
               rgb, [crop_box] if is_face else [])


def recall_table(results: dict[str, list[dict]], key: str) -> list[str]:
    names = list(results)
    lines = [f"| {key} | " + " | ".join(f"{n} recall" for n in names) + " | cases |",
             "|---|" + "---|" * (len(names) + 1)]
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, records in results.items():
        for record in records:
            if record["set"] == "framings":
                groups[record[key]][name].append(record)
    for value, by_name in groups.items():
        cells = []
        for name in names:
            found = sum(r["found"] for r in by_name[name])
            total = sum(r["faces"] for r in by_name[name])
            cells.append(f"{found / total:.3f}")
        lines.append(f"| {value} | " + " | ".join(cells) + f" | {len(by_name[names[0]])} |")
    return lines


def summarise(results: dict[str, list[dict]]) -> str:
    """The markdown tables: recall per condition, then totals and times per detector."""
    framings = sum(r["set"] == "framings" for r in next(iter(results.values())))
    lines = [f"{framings} framings, IoU >= {FOUND_IOU} counts as found", ""]
    for key in ("canvas", "face", "placement", "rotation", "flip", "lighting"):
        lines += recall_table(results, key) + [""]
    lines += ["| detector | framings recall | framings false positives | LFW faces found | LFW non-face "
              "false positives | median s 1920x1080 | median s 640x360 | median s 1080x1920 |",
              "|---|---|---|---|---|---|---|---|"]
    for name, records in results.items():
        framed = [r for r in records if r["set"] == "framings"]
        lfw_faces = [r for r in records if r["set"] == "LFW faces"]
        lfw_other = [r for r in records if r["set"] == "LFW non-faces"]
        times = {canvas: np.median([r["seconds"] for r in framed if r["canvas"] == canvas])
                 for canvas in ("16:9 1920x1080", "16:9 640x360", "9:16 1080x1920")}
        lines.append(
            f"| {name} | {sum(r['found'] for r in framed) / len(framed):.3f} | "
            f"{sum(r['false_positives'] for r in framed)} | {sum(r['found'] for r in lfw_faces)}/{len(lfw_faces)} | "
            f"{sum(r['false_positives'] > 0 for r in lfw_other)}/{len(lfw_other)} | "
            + " | ".join(f"{t:.3f}" for t in times.values()) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("full", "sample"), default="full")
    parser.add_argument("--json", type=Path, default=None, help="write every case's record here")
    parser.add_argument("--from-json", type=Path, default=None, help="print the tables of a saved run")
    args = parser.parse_args()
    if args.from_json:
        print(summarise(json.loads(args.from_json.read_text())))
        return
    torch.set_num_threads(1)
    grid = full_grid() if args.grid == "full" else sample_grid()

    results = {}
    for name, detector in DETECTORS.items():
        detector(np.zeros((64, 64, 3), np.uint8))  # load weights / cascade outside the timing
        # Rendered again for each detector: a full grid of 1920 px images does not fit in memory.
        results[name] = evaluate(itertools.chain(framing_cases(grid), lfw_labelled()), detector)
    print(summarise(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
