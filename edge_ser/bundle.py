"""The bundle: the only thing the export side and the runtime share.

A directory holding model files (ONNX ``*.onnx``, OpenVINO ``*.xml`` + ``*.bin``), each a full
graph from raw 16 kHz mono float32 PCM ``audio[batch, samples]`` to ``probs[batch, classes]``,
plus ``edge-ser.json`` (this module's schema) and ``MODEL_CARD.md``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "edge-ser.json"
MODEL_CARD = "MODEL_CARD.md"
INPUT_NAME = "audio"
OUTPUT_NAME = "probs"
REQUIRED_KEYS = ("schema_version", "labels", "sample_rate", "window_s", "hop_s", "min_input_s",
                 "max_input_s", "variants", "files", "default_variant")


@dataclass
class Variant:
    """One exported graph of the bundle."""

    name: str
    files: list[str]          # the model file first (.onnx or .xml), then companions (.bin)
    format: str               # "onnx" | "openvino"
    precision: str            # "fp32" | "int8"
    model: str                # "teacher" | "student"
    quantization: str | None = None   # None | "dynamic" | "static-qdq" | "nncf-ptq"
    parity: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def window_s(self) -> float:
        return float(self.manifest["window_s"])

    @property
    def hop_s(self) -> float:
        return float(self.manifest["hop_s"])

    @property
    def min_input_s(self) -> float:
        return float(self.manifest["min_input_s"])

    @property
    def variants(self) -> dict[str, Variant]:
        return {name: Variant(name=name, **spec) for name, spec in self.manifest["variants"].items()}

    def variant(self, name: str | None = None) -> Variant:
        """The named variant, or the bundle's default; an unknown name lists the known ones."""
        name = name or self.manifest["default_variant"]
        variants = self.variants
        if name not in variants:
            raise BundleError(f"bundle {self.path} has no variant {name!r}; it has: {', '.join(variants)}")
        return variants[name]

    def model_path(self, variant: Variant) -> Path:
        return self.path / variant.files[0]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and check a bundle: known schema, required keys, every file present with its SHA-256."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not an edge-ser bundle: {MANIFEST} is missing "
                          "(make one with `edge-ser export`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; re-export the bundle")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path} has schema_version {version!r}; this edge-ser reads "
                          f"version {SCHEMA_VERSION} only: re-export the bundle or upgrade edge-ser")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks {', '.join(missing)}; re-export the bundle")
    if not manifest["variants"]:
        raise BundleError(f"{manifest_path} lists no variants; re-export the bundle")
    for name, spec in manifest["variants"].items():
        for f in spec.get("files", []):
            if f not in manifest["files"]:
                raise BundleError(f"variant {name!r} uses {f}, which has no checksum in {MANIFEST}")
    if verify:
        for name, spec in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise BundleError(f"bundle file {f} is missing; re-export the bundle")
            if sha256(f) != spec["sha256"]:
                raise BundleError(f"bundle file {f} does not match its SHA-256 in {MANIFEST}: "
                                  "it was modified or corrupted; re-export the bundle")
    return Bundle(path=path, manifest=manifest)


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Fill ``files`` with size and SHA-256 of every variant file, then write manifest and model card."""
    directory = Path(directory)
    names = sorted({f for spec in manifest["variants"].values() for f in spec["files"]})
    manifest = {**manifest, "schema_version": SCHEMA_VERSION,
                "files": {n: {"sha256": sha256(directory / n), "bytes": (directory / n).stat().st_size}
                          for n in names}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    (directory / MODEL_CARD).write_text(model_card(manifest))
    return manifest


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary sibling directory that becomes ``out`` only if the block completes.

    Any exception (Ctrl-C included) removes it, so a failed export leaves no partial bundle.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def model_card(m: dict) -> str:
    """A short human-readable card generated from the manifest's facts."""
    lines = [f"# edge-ser model: {', '.join(m['labels'])}", ""]
    teacher, student, data = m.get("teacher", {}), m.get("student", {}), m.get("data", {})
    ev = m.get("evaluation", {})
    lines += [f"- Labels (output order): {', '.join(m['labels'])}",
              f"- Input: {m['sample_rate']} Hz mono float32 PCM, window {m['window_s']} s, "
              f"hop {m['hop_s']} s, at least {m['min_input_s']} s",
              f"- Teacher: {teacher.get('name', '?')}", f"- Student: {student.get('summary', '?')}",
              f"- Training data: {data.get('summary', '?')}",
              f"- Evaluation protocol: {ev.get('protocol', '?')}", "",
              "| variant | format | precision | quantization | UA | WA | macro-F1 | n | top-1 agreement | max abs diff |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in m["variants"].items():
        mt, par = v.get("metrics", {}), v.get("parity", {})
        lines.append("| " + " | ".join(_fmt(x) for x in (
            name, v["format"], v["precision"], v.get("quantization") or "-", mt.get("ua", "-"),
            mt.get("wa", "-"), mt.get("f1", "-"), mt.get("n", "-"), par.get("top1_agreement", "-"),
            par.get("max_abs_diff", "-"))) + " |")
    lines += ["", "Accuracy is speaker-independent: the test speakers' audio was not used for "
              "distillation, calibration, normalisation or the head.", ""]
    return "\n".join(lines)
