"""Model families: what makes each EMO-lineage model itself (EMO, Hallo, EchoMimic).

A family owns its conditioning (audio front end and tokens, identity inputs, region masks), its
attention processors and where they sit, its clip schedule, its checkpoint detection and
conversion, and its defaults. The shared blocks (`emo.models`) and the sampling loop
(`emo.pipeline`) name no family.
"""
