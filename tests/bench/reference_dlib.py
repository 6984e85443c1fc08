"""Times dlib-bin's CNN face detector (cnn_face_detection_model_v1, upsample 0) and its 5-point
shape predictor on photos, for tests/bench/variants.rs. Usage:

    python reference_dlib.py WEIGHTS_DIR RUNS PHOTO...

Prints JSON {photo file name: {"detect_ms": median, "landmarks_ms": median per face}} on stdout.
Photos whose longer side exceeds 1200 pixels are scaled down to 1200 first, as the `dlib`
guest's default max-size does (the scaling is not timed; the guest's is).
"""
import json, os, statistics, sys, time

import dlib
import numpy as np
from PIL import Image

weights, runs, photos = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
detector = dlib.cnn_face_detection_model_v1(os.path.join(weights, "mmod_human_face_detector.dat"))
predictor = dlib.shape_predictor(os.path.join(weights, "shape_predictor_5_face_landmarks.dat"))
out = {}
for path in photos:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    h, w = rgb.shape[:2]
    if max(w, h) > 1200:
        s = 1200 / max(w, h)
        rgb = dlib.resize_image(rgb, round(h * s), round(w * s))
    detector(rgb, 0)  # warm-up
    times, shapes = [], []
    for _ in range(runs):
        start = time.perf_counter()
        dets = detector(rgb, 0)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for d in dets:
            predictor(rgb, d.rect)
        shapes.append((time.perf_counter() - start) / max(1, len(dets)))
    out[os.path.basename(path)] = {
        "detect_ms": statistics.median(times) * 1000,
        "landmarks_ms": statistics.median(shapes) * 1000,
    }
    print(f"dlib-bin {os.path.basename(path)}: {out[os.path.basename(path)]['detect_ms']:.0f} ms", file=sys.stderr)
json.dump(out, sys.stdout)
