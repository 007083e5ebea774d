"""The Hallo family (fudan-generative-vision/hallo, MIT) and its lineage: Hallo2, JoyHallo."""
