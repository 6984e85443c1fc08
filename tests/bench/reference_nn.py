"""onnxruntime's side of the `nn` benchmark (tests/bench/nn.rs), driven over stdin/stdout.

One JSON request per line, one JSON reply per line:
  {"load": case, "model": path, "threads": t, "inputs": [[raw f32 file, shape], ...]}
      -> {"ok": true}                   a session per case, an input per run of the case
  {"run": case, "warm_ms": w}  -> {"ms": elapsed}
      every input of the case once, timed here (no IPC); after untimed runs for w ms
  {"check": case, "outputs": [raw f32 file, ...]}
      -> {"max_abs_diff": d, "max_abs": m}   refacen's first outputs against onnxruntime's

Sessions are what a new user gets: default graph optimizations, the CPU provider,
intra-op threads set to refacen's thread count, sequential execution. Its idle workers spin
for ~50 ms after a run: the benchmark waits for them to stop before refacen's run. With
REFACEN_BENCH_ORT_SPIN=0 they do not spin at all (onnxruntime's batch-1 runs are then slower).
"""

import os

import json
import sys
import time

import numpy as np
import onnxruntime as ort

sessions = {}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    req = json.loads(line)
    if "load" in req:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = req["threads"]
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if os.environ.get("REFACEN_BENCH_ORT_SPIN") == "0":
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(req["model"], opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        feeds = [
            {name: np.fromfile(path, dtype="<f4").reshape(shape)} for path, shape in req["inputs"]
        ]
        sessions[req["load"]] = (sess, feeds)
        reply({"ok": True, "version": ort.__version__})
    elif "run" in req:
        sess, feeds = sessions[req["run"]]
        warming = time.perf_counter()
        while time.perf_counter() - warming < req.get("warm_ms", 0) / 1000.0:
            for feed in feeds:
                sess.run(None, feed)
        start = time.perf_counter()
        for feed in feeds:
            sess.run(None, feed)
        reply({"ms": (time.perf_counter() - start) * 1000.0})
    elif "check" in req:
        sess, feeds = sessions[req["check"]]
        diff, peak = 0.0, 0.0
        for feed, path in zip(feeds, req["outputs"]):
            ours = np.fromfile(path, dtype="<f4")
            theirs = sess.run(None, feed)[0].reshape(-1)
            diff = max(diff, float(np.max(np.abs(ours - theirs))))
            peak = max(peak, float(np.max(np.abs(theirs))))
        reply({"max_abs_diff": diff, "max_abs": peak})
