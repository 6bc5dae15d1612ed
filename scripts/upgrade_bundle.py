"""Convert a schema-2 bundle (each graph ends in its own linear head) to schema 3 (graphs end in the pooled
embedding; the head is a separate file), without re-exporting: the head's numbers are taken out of the graph
(of a float variant where the model has one, else its int8 weights dequantized) and the graph is cut where the
head began.

Needs the toolchain's onnx package. Usage: python scripts/upgrade_bundle.py OLD_BUNDLE --out NEW_BUNDLE
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_ser import manifest as mf
from edge_ser.bundle import atomic_directory, load_bundle, sha256_file, write_bundle
from edge_ser.engine import load_graph
from edge_ser.head import LinearHead


def split(model: onnx.ModelProto) -> tuple[onnx.ModelProto, LinearHead]:
    """The graph cut before its head (output ``embedding``: the layers the head read, flattened) and the head."""
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    sub = next(n for n in g.node if n.op_type == "Sub" and "head.norm.mean" in n.input)
    layers = init["head.layers"]
    if "head.linear.weight" in init:
        weight = init["head.linear.weight"]
    else:   # dynamic int8: weight^T quantized per output channel
        q = init["head.linear.weight_Transposed_quantized"].astype(np.float64)
        zero, scale = init["head.linear.weight_Transposed_zero_point"], init["head.linear.weight_Transposed_scale"]
        weight = ((q - zero) * scale).T
    head = LinearHead(init["head.norm.mean"][layers].ravel().astype(np.float64),
                      init["head.norm.scale"][layers].ravel().astype(np.float64),
                      np.asarray(weight, np.float64), init["head.linear.bias"].astype(np.float64))
    keep = [n for n in g.node if not n.name.startswith("/head/") and g.output[0].name not in n.output]
    keep += [helper.make_node("Gather", [sub.input[0], "head.layers"], ["picked"], axis=1, name="/embed/Gather"),
             helper.make_node("Flatten", ["picked"], [mf.OUTPUT_NAME], axis=1, name="/embed/Flatten")]
    used = {i for n in keep for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    out = helper.make_tensor_value_info(mf.OUTPUT_NAME, onnx.TensorProto.FLOAT, ["batch", head.dim])
    graph = helper.make_graph(keep, g.name, list(g.input), [out], inits)
    new = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="edge-ser upgrade")
    new.ir_version = model.ir_version
    onnx.checker.check_model(new)
    return new, head


def upgrade(old: Path, out: Path) -> mf.Manifest:
    doc = json.loads((old / mf.MANIFEST).read_text())
    if doc.get("schema_version") != 2 or any(v["format"] != "onnx" for v in doc["variants"].values()):
        sys.exit(f"error: {old} is not a schema-2 bundle of ONNX variants")
    heads, probe = {}, (0.1 * np.sin(np.arange(32000) / 7.0)).astype(np.float32)[None]
    with atomic_directory(out) as tmp:
        for name, v in doc["variants"].items():
            model = onnx.load(str(old / v["files"][0]))
            graph, head = split(model)
            (tmp / v["files"][0]).write_bytes(graph.SerializeToString())
            before = load_graph([(old / v["files"][0]).read_bytes()])(probe)
            after = head.probs(load_graph([graph.SerializeToString()])(probe))
            print(f"{name}: max |dp| old vs split {np.abs(before - after).max():.2e}", file=sys.stderr)
            if v["precision"] != "int8" or v["model"] not in heads:   # a float head wins over a dequantized one
                heads[v["model"]] = head
            v["head"] = v["model"]
        for key, head in heads.items():
            (tmp / f"head-{key}.npz").write_bytes(head.to_bytes())
            doc["files"][f"head-{key}.npz"] = {"sha256": sha256_file(tmp / f"head-{key}.npz"), "bytes": 0}
        old_head = doc.pop("head")
        doc["heads"] = {key: {"file": f"head-{key}.npz", "dim": h.dim, "kind": old_head["kind"],
                              "inputs": old_head["inputs"], "fit": "taken out of the schema-2 graph (not calibrated)"}
                        for key, h in heads.items()}
        doc["schema_version"] = mf.SCHEMA_VERSION
        return write_bundle(tmp, mf.Manifest.from_dict(doc))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    upgrade(args.bundle, args.out)
    load_bundle(args.out)
