"""Training data for EMO: `python -m emo prepare` turns talking/singing videos into a dataset.

Data path, per source video (`prepare.prepare_video`)::

    file --decode.probe/iter_frames--> frames resampled to the dataset fps (sample and hold)
         --tracking.detect/track-----> one face box per frame (Haar, gaps filled, smoothed)
         --tracking.find_clips-------> clips: stretches with a tracked face, no scene cut
         --crop (square, per clip)---> frames [F, S, S, 3] uint8, boxes in crop pixels
         --head_speed estimator------> head-rotation speed per frame (degrees per frame)
         --emo.audio.encode_audio----> wav2vec2 features per frame [F, L, D]
         --VAE (optional)------------> latents [F, 4, S/8, S/8]

On-disk layout (`layout.py` reads and writes it)::

    DATASET/
      dataset.json      format, fps, size, what is stored, encoder fingerprints, the speed
                        estimator, and the speed buckets computed from the data's statistics
      manifest.jsonl    one line per source video: "ok" with its clips, or "skipped" with a reason
      clips/<clip>/     frames.npy   uint8   [F, S, S, 3]     (store = frames or both)
                        latents.npy  float16 [F, 4, h, w]     (store = latents or both), VAE-scaled
                        boxes.npy    float32 [F, 4]           face box (x0, y0, x1, y1), crop pixels
                        speed.npy    float32 [F]              head-rotation speed, degrees per frame
                        audio.npy    float16 [F, L, D]        wav2vec2 features of every layer
                        waveform.npy float32 [T]              the clip's audio, 16 kHz mono

Arrays are plain `.npy` files so training reads any frame range through a memory map.
"""
