"""The Hallo family (fudan-generative-vision/hallo, MIT) and its lineage: Hallo2, JoyHallo.

Modules: `family` (how a Hallo model is built and conditioned), `options` (its checkpoint
options), `audio_modules` (the regional audio attention), `face_projection` (identity tokens),
`portrait` (identity embedding and landmark masks of the reference, from the face_analysis folder),
`masks` (Hallo's masks from landmarks), `regions` (the face-box fallback masks), `audio` (Hallo's audio
front end), `convert` (Hallo's `net.pth` -> a checkpoint), `folder` (a whole pretrained_models folder).
"""
