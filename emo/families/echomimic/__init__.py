"""The EchoMimic family (antgroup/echomimic, Apache-2.0): V1 and its acc weights.

Modules: `family` (how an EchoMimic model is built, conditioned and sampled), `options`,
`whisper` (the whisper-tiny encoder from openai's checkpoint format), `audio` (EchoMimic's
feature recipe), `files` (reading a user's pretrained_weights folder), `convert` (that folder ->
a checkpoint).
"""
