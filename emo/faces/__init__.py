"""Finding faces in portraits and what the model families compute from them.

Family-neutral: detection (the default detector, or the user's face-analysis model folder),
5-point alignment, identity embeddings and landmarks. What a family makes of them (Hallo's
region masks, EchoMimic's face mask) lives in that family's module.
"""
