"""Quality metrics for EMO, measured from pixels on synthetic talkers (`emo.synthetic`).

- `measure.py`: per-frame measurements (pose by image alignment, mouth opening, colours, silhouette);
- `metrics.py`: lip sync, head motion / speed control, identity distance, seam stability;
- `evaluation.py`: `emo evaluate` (generate held-out talkers with a checkpoint, measure, compare
  with targets and with the ground truth);
- `frechet.py`: FID and FVD with the standard TorchScript networks, from local files;
- `commands.py`: the `synth` and `evaluate` commands.
"""
