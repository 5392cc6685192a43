#!/usr/bin/env python3
"""Checks the greedy runs gpu-check.sh wrote, for every model:

* the prompt's logits (one-token runs) of each cuda:0 backend against the
  ndarray reference on the CPU, within the conformance suite's limits
  (normalised mean squared error: 1e-9 for float weights, llama.cpp
  test-backend-ops' 5e-4 for quantised ones, where activations are rounded
  to Q8 first);
* the greedy token ids of each cuda:0 backend against the CPU backend that
  rounds activations the same way: ndarray for float models, candle-cpu for
  quantised ones (on random weights, rounding alone flips close argmaxes).

Prints one line per check; exits 1 on any failure.
Usage: scripts/gpu-compare.py LOG_DIR"""
import glob
import json
import os
import sys

EXACT, QUANTISED = 1e-9, 5e-4


def nmse(got, want):
    if len(got) != len(want):
        return float("inf")
    err = sum((g - w) ** 2 for g, w in zip(got, want))
    return err / (sum(w * w for w in want) or 1.0)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": str(e)}


def main(log_dir):
    results = []
    refs = sorted(glob.glob(os.path.join(log_dir, "prompt-*-ndarray-cpu.json")))
    for ref_path in refs:
        model = os.path.basename(ref_path)[len("prompt-"):-len("-ndarray-cpu.json")]
        quantised = not model.endswith("f32")
        limit = QUANTISED if quantised else EXACT
        ref_logits = load(ref_path).get("last_logits", [])
        id_ref_name = "candle-cpu" if quantised else "ndarray-cpu"
        ref_ids = load(os.path.join(log_dir, f"generate-{model}-{id_ref_name}.json")).get("ids")
        for path in sorted(glob.glob(os.path.join(log_dir, f"prompt-{model}-*-cuda0.json"))):
            target = os.path.basename(path)[len(f"prompt-{model}-"):-len(".json")]
            got = load(path)
            e = nmse(got.get("last_logits", []), ref_logits)
            results.append((e <= limit, f"{model} {target}: prompt logits nmse {e:.2e} "
                            f"(limit {limit:.0e}) {got.get('error', '')}"))
            ids = load(os.path.join(log_dir, f"generate-{model}-{target}.json")).get("ids")
            results.append((ids is not None and ids == ref_ids,
                            f"{model} {target}: greedy ids {ids} vs {id_ref_name} {ref_ids}"))
    if not results:
        results.append((False, f"no prompt-*-ndarray-cpu.json in {log_dir}"))
    for ok, line in results:
        print(("OK   " if ok else "FAIL ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu-logs"))
