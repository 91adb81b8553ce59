"""How much faster can int8 be on this CPU? ONNX Runtime fp32 MatMul vs dynamic-int8 MatMul on MiniLM's shapes.

A BERT forward pass is mostly these matrix products (per layer: Q/K/V/output 384x384, FFN 384x1536 and
1536x384). Whatever an int8 export does, its speed-up over the fp32 graph cannot exceed the speed-up of the int8
kernels themselves on the same machine (the rest — attention softmax, LayerNorm, GELU, tokenization — does not
get faster). This script times both kernels through ONNX Runtime, the runtime of every exported model here::

    python bench/bench_int8_ceiling.py --threads 2 [--tokens 768] [--output bench/results/int8_ceiling.json]

It builds one graph per precision with the six products of a MiniLM layer, quantizes the fp32 graph with
``quantize_dynamic`` (per-channel and per-tensor weights, the recipes bertkit uses) and reports the best of
``--repeats`` timings, GFLOP/s and the int8/fp32 ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from bench_train import cpu_model  # the same CPU label as the training benchmark (stdlib-only module)
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

HIDDEN, FFN = 384, 1536
SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, FFN), (FFN, HIDDEN)]  # Q, K, V, attention out, FFN in, FFN out


def layer_graph(path: Path, seed: int = 0) -> None:
    """An ONNX graph: x [M, 384] through the six products of one layer (each from x or the FFN input)."""
    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], []
    for i, (k, n) in enumerate(SHAPES):
        w = numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), f"w{i}")
        inits.append(w)
        src = "h" if k == FFN else "x"
        nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"y{i}"]))
        if n == FFN:  # the FFN's second product reads the first one's output
            nodes.append(helper.make_node("Relu", [f"y{i}"], ["h"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", HIDDEN])
    graph = helper.make_graph(nodes, "minilm_layer_matmuls", [x], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def best_time(path: Path, x: np.ndarray, threads: int, repeats: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=768, help="rows M of the activations (batch x length)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    flops = 2.0 * args.tokens * sum(k * n for k, n in SHAPES)
    x = np.random.default_rng(1).standard_normal((args.tokens, HIDDEN)).astype(np.float32)
    report: dict = {"cpu": cpu_model(), "threads": args.threads,
                    "tokens": args.tokens, "ort": ort.__version__, "results": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        layer_graph(fp32)
        variants = {"fp32": fp32}
        for name, per_channel, reduce_range in (("int8_per_channel_reduce_range", True, True),
                                                ("int8_per_tensor", False, False)):  # fmt: skip
            out = Path(tmp) / f"{name}.onnx"
            quantize_dynamic(str(fp32), str(out), per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=QuantType.QInt8 if per_channel else QuantType.QUInt8)  # fmt: skip
            variants[name] = out
        for name, path in variants.items():
            secs = best_time(path, x, args.threads, args.repeats)
            report["results"][name] = {"ms": round(1000 * secs, 3), "gflops": round(flops / secs / 1e9, 1)}
    base = report["results"]["fp32"]["ms"]
    for r in report["results"].values():
        r["speedup_vs_fp32"] = round(base / r["ms"], 2)
    print(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
