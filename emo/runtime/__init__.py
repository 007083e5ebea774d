"""The runtime layer: what every entry point (command line, batch, evaluation, ComfyUI nodes)
does around the model, done once.

- `devices`: which device and dtype a run uses;
- `output`: output paths checked before the work, files written atomically with normal
  permissions;
- `reference`: the portrait made square and its face-region mask aligned with it, from one
  face detection on the full-resolution source;
- `jobs`: one generation from files to a video (read and check the inputs, load the model,
  prepare, render).

Nothing here imports the command line; the command line imports this.
"""
