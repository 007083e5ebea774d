"""The Hallo family (fudan-generative-vision/hallo, MIT) and its lineage: Hallo2, JoyHallo.

Modules: `family` (how a Hallo model is built and conditioned), `options` (its checkpoint
options), `audio_modules` (the regional audio attention), `face_projection` (identity tokens),
`regions` (region masks), `convert` (Hallo's `net.pth` -> a checkpoint).
"""
