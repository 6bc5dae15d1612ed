"""The bundle contract: ``edge-ser.json`` as typed dataclasses, one per section, read and written only here.

A bundle is untrusted input (it may come from anywhere), so :func:`Manifest.from_json` checks every value
before anything uses it: types, ranges, lengths, names. Unknown keys are ignored, so a newer exporter that
adds a key does not break this runtime; a missing required key, a value of the wrong type or out of range is
one :class:`~edge_ser.errors.BundleError` that names the key (``variants.fp32.files``).

Contract constants (graph input/output names, file names, limits) are defined here and nowhere else; the
sample rate is :data:`edge_ser.audio.SAMPLE_RATE`.
"""
from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

from .audio import SAMPLE_RATE
from .errors import BundleError

SCHEMA_VERSION = 3
MANIFEST = "edge-ser.json"
MODEL_CARD = "MODEL_CARD.md"
INPUT_NAME = "audio"            # graph input: float32 PCM [batch, samples] at input.sample_rate
OUTPUT_NAME = "embedding"       # graph output: the pooled embedding [batch, dim] its head reads
TOKENS_NAME = "tokens"          # fusion graph input: the text model's token states [batch, tokens, text_dim]
TOKEN_MASK_NAME = "token_mask"  # fusion graph input: 1 for a token, 0 for padding [batch, tokens]
LOGITS_NAME = "logits"          # fusion graph output: [batch, labels]
MAX_MANIFEST_BYTES = 4 << 20
MAX_FILE_BYTES = 2 << 30        # protobuf's limit; every graph of a bundle is far smaller
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")   # file and variant names: no paths, no hidden files
SHA256 = re.compile(r"[0-9a-f]{64}")
FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
MODELS = ("teacher", "student")
MAX_STR = 4000
MAX_LABELS = 1000               # labels of one bundle
MAX_NAME = 200                  # characters of a label, a speaker or a corpus name


def limits(lo: float | None = None, hi: float | None = None, *, default: Any = MISSING, items: int | None = None,
           max_len: int | None = None, pattern: re.Pattern | None = None) -> Any:
    """A dataclass field with the checks ``from_dict`` applies: a closed range for numbers, at most ``items``
    entries in a list or object, ``max_len`` characters per string, a ``pattern`` for strings and object keys."""
    meta = {"range": (lo, hi), "items": items, "max_len": max_len, "pattern": pattern}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class Input:
    """What every graph of the bundle takes: mono float32 PCM, and the lengths it was made for (seconds)."""

    window_s: float = limits(0.05, 600.0)        # classification window for long audio
    hop_s: float = limits(0.01, 600.0)           # between windows (at least 10 ms: 100 windows per second)
    sample_rate: int = limits(8000, 48000, default=SAMPLE_RATE)
    min_input_s: float = limits(0.01, 60.0, default=0.25)    # shorter audio is repeated up to this length
    max_input_s: float = limits(0.05, 3600.0, default=30.0)  # longest input a graph takes in one call

    def check(self, where: str) -> None:
        if not self.min_input_s <= self.window_s <= self.max_input_s:
            raise BundleError(f"{where}.window_s {self.window_s} must lie between min_input_s {self.min_input_s} "
                              f"and max_input_s {self.max_input_s}")
        if self.hop_s > self.window_s:
            raise BundleError(f"{where}.hop_s {self.hop_s} must not exceed window_s {self.window_s}")


@dataclass
class Metrics:
    """Speaker-independent scores of one model on the held-out clips."""

    ua: float = limits(0.0, 1.0)    # unweighted accuracy: mean recall over classes
    wa: float = limits(0.0, 1.0)    # weighted accuracy: plain accuracy
    f1: float = limits(0.0, 1.0)    # macro-F1
    n: int = limits(0, 10**9)       # clips scored
    ece: float | None = limits(0.0, 1.0, default=None)   # expected calibration error of the probabilities
    recall: dict[str, float] = limits(0.0, 1.0, default={}, items=MAX_LABELS)   # per label
    target: str = limits(default="", max_len=40)   # the CPU family they were measured on (int8 kernels differ)


@dataclass
class Parity:
    """How closely a graph reproduces its torch model on held-out clips."""

    max_abs_diff: float = limits(0.0, 1.0)
    top1_agreement: float = limits(0.0, 1.0)
    n: int = limits(0, 10**9)


@dataclass
class Variant:
    """One graph of the bundle. ONNX: one ``.onnx`` file (no external data); OpenVINO: ``.xml`` then ``.bin``."""

    files: list[str] = limits(items=2, pattern=NAME)
    format: Literal["onnx", "openvino"]
    precision: Literal["fp32", "fp16", "int8"]
    model: Literal["teacher", "student"]
    head: str = limits(pattern=NAME)     # which of the manifest's heads turns its embedding into probabilities
    macs_per_s: int | None = limits(0, 10**15, default=None)   # multiply-accumulates per second of audio
    quantization: str | None = limits(default=None, max_len=200)   # how it was quantized, for people
    targets: list[str] = limits(default=[], items=16, pattern=NAME)   # CPUs it is made for ([]: any)
    latency_ms: dict[str, float] = limits(0.0, 1e7, default={}, items=16, pattern=NAME)   # per 2 s window,
    # 1 thread, measured at export on the CPU family named by the key (`--variant auto` prefers the fastest)
    parity: Parity | None = None
    metrics: Metrics | None = None

    def check(self, where: str) -> None:
        suffixes = [".onnx"] if self.format == "onnx" else [".xml", ".bin"]
        if [f[f.rfind("."):].lower() if "." in f else "" for f in self.files] != suffixes:
            raise BundleError(f"{where}.files must be {' and '.join('one ' + s for s in suffixes)} file "
                              f"for format {self.format!r}, not {self.files}")


@dataclass
class FileEntry:
    sha256: str = limits(pattern=SHA256)
    bytes: int = limits(0, MAX_FILE_BYTES)


@dataclass
class Teacher:
    """The pretrained encoder the head was first fit on."""

    name: str = limits(max_len=200)
    family: str = limits(max_len=40)             # whisper | wav2vec2 | hubert | wavlm | data2vec-audio
    blocks: int = limits(1, 1000)                # transformer blocks
    dim: int = limits(1, 100_000)
    source: str = limits(default="", max_len=200)   # where its weights came from (a package or hub id, no paths)
    macs_per_s: int | None = limits(0, 10**15, default=None)


@dataclass
class Epoch:
    epoch: int = limits(0, 10**6)
    loss: float | None = limits(0.0, 1e12, default=None)
    score: float | None = limits(0.0, 1.0, default=None)   # validation UA
    kept: bool = False


@dataclass
class Student:
    """The cheaper encoder the bundle's student variants run."""

    blocks: int = limits(1, 1000)
    dim: int = limits(1, 100_000)
    summary: str = limits(default="", max_len=MAX_STR)
    time_stride: int = limits(1, 64, default=1)
    ffn: int | None = limits(1, 10**6, default=None)
    ffn_blocks: list[int] = limits(1, 10**6, default=[], items=1000)   # FFN units each block kept, if cut
    macs_per_s: int | None = limits(0, 10**15, default=None)
    distillation: list[Epoch] = limits(default=[], items=10_000)
    validation_speakers: list[str] = limits(default=[], items=10_000, max_len=MAX_NAME)


@dataclass
class Head:
    """The classifier the runtime applies to a variant's embedding (:mod:`edge_ser.head`): its numbers are
    ``file``, an uncompressed .npz of float32 ``mean[dim]``, ``scale[dim]``, ``weight[labels, dim]``,
    ``bias[labels]``; a fitted temperature is already folded into weight and bias."""

    file: str = limits(pattern=NAME)
    dim: int = limits(1, 1_000_000)               # embedding size
    kind: str = limits(default="linear", max_len=40)
    inputs: str = limits(default="", max_len=200)   # which hidden states the embedding pools, e.g. "layer 2"
    fit: str = limits(default="", max_len=MAX_STR)  # how it was fit and cross-validated, for people
    temperature: float = limits(0.001, 1000.0, default=1.0)
    ece: float | None = limits(0.0, 1.0, default=None)   # expected calibration error of its out-of-fold estimate
    unsure_below: float = limits(0.0, 1.0, default=0.5)  # an event whose top probability is lower is "unsure"


@dataclass
class Adapted:
    """What ``edge-ser adapt`` changed: a new head on the encoder files of a base bundle."""

    base: str = limits(max_len=200)           # the base bundle's id (SHA-256 of its manifest, 12 hex digits)
    base_labels: list[str] = limits(default=[], items=MAX_LABELS, max_len=MAX_NAME)
    variant: str = limits(default="", max_len=128)   # the variant whose embedding the head was fit on
    ua: float | None = limits(0.0, 1.0, default=None)          # cross-validated estimate ...
    ua_spread: float | None = limits(0.0, 1.0, default=None)   # ... and the standard deviation over folds
    protocol: str = limits(default="", max_len=MAX_STR)
    speaker_independent: bool = True


@dataclass
class Fusion:
    """The text path's attention-alignment head (``edge-ser export`` from a manifest with a ``text`` column; see
    :mod:`edge_ser.fusion`): one ONNX graph from ``audio[batch, samples]``, the text model's token states
    ``tokens[batch, n, text_dim]`` and ``token_mask[batch, n]`` to ``logits[batch, labels]`` over the bundle's
    labels; each token of the transcript attends over the audio frames of the encoder the graph holds."""

    file: str = limits(pattern=NAME)
    text_encoder: str = limits(pattern=SHA256)   # SHA-256 of the text encoder whose token states it reads
    text_dim: int = limits(1, 4096)
    audio: str = limits(default="", max_len=MAX_STR)   # which encoder's frames it attends over, for people
    fit: str = limits(default="", max_len=MAX_STR)     # how it was trained, for people
    metrics: Metrics | None = None         # the fused result on the held-out speakers' clips ...
    audio_metrics: Metrics | None = None   # ... and the audio alone (its own encoder and head) on the same clips


@dataclass
class Data:
    """What the model learned from (names and counts only: no paths of the exporting machine)."""

    corpus: str = limits(max_len=MAX_NAME)
    clips: int = limits(0, 10**9)
    speakers: int = limits(0, 10**9)
    test_speakers: list[str] = limits(default=[], items=10_000, max_len=MAX_NAME)   # held out for the metrics ...
    trained_speakers: list[str] = limits(default=[], items=100_000, max_len=MAX_NAME)   # ... but the shipped files
    # learned from these (every labelled speaker): scoring the bundle on them again would be optimistic
    label_counts: dict[str, int] = limits(0, 10**9, default={}, items=MAX_LABELS)
    skipped: dict[str, int] = limits(0, 10**9, default={}, items=100)
    unlabeled: str | None = limits(default=None, max_len=MAX_STR)
    licences: dict[str, str] = limits(default={}, items=100)
    notes: list[str] = limits(default=[], items=100)


@dataclass
class Evaluation:
    protocol: str = limits(max_len=MAX_STR)
    shipped: str = limits(default="", max_len=MAX_STR)   # which model the metrics describe vs the one shipped
    tolerance_ua: float = limits(0.0, 1.0, default=0.01)  # `--variant auto` trades at most this much UA for speed
    torch_teacher: Metrics | None = None
    torch_student: Metrics | None = None


@dataclass
class Export:
    edge_ser: str = limits(default="", max_len=40)        # version of the exporter
    seconds: float | None = limits(0.0, 1e9, default=None)
    config: dict[str, str] = limits(default={}, items=100)   # the options, as given, and recipe versions


@dataclass
class Manifest:
    labels: list[str] = limits(items=MAX_LABELS, max_len=MAX_NAME)
    input: Input
    variants: dict[str, Variant] = limits(items=64, pattern=NAME)
    default_variant: str = limits(max_len=128)
    heads: dict[str, Head] = limits(items=16, pattern=NAME)
    files: dict[str, FileEntry] = limits(default={}, items=128, pattern=NAME)
    teacher: Teacher | None = None
    student: Student | None = None
    fast: Student | None = None          # the fast student (variants fast-*: model "student", head "fast")
    data: Data | None = None
    evaluation: Evaluation | None = None
    export: Export | None = None
    adapted: Adapted | None = None
    fusion: Fusion | None = None         # optional: the text path's attention-alignment head
    schema_version: int = SCHEMA_VERSION

    def check(self, where: str = MANIFEST) -> None:
        self.input.check(f"{where}: input")
        if len(self.labels) < 2:
            raise BundleError(f"{where}: labels must list at least two classes, not {self.labels}")
        duplicates = sorted({lab for lab in self.labels if self.labels.count(lab) > 1})
        if duplicates or any(not lab.strip() for lab in self.labels):
            raise BundleError(f"{where}: labels must be distinct and non-empty; repeated: {duplicates}")
        if not self.variants:
            raise BundleError(f"{where}: variants lists no graph")
        if self.default_variant not in self.variants:
            raise BundleError(f"{where}: default_variant {self.default_variant!r} is not one of the variants "
                              f"({', '.join(self.variants)})")
        for name, v in self.variants.items():
            v.check(f"{where}: variants.{name}")
            if v.head not in self.heads:
                raise BundleError(f"{where}: variant {name!r} uses head {v.head!r}, which is not one of the heads "
                                  f"({', '.join(self.heads)})")
            for f in [*v.files, self.heads[v.head].file]:
                if f not in self.files:
                    raise BundleError(f"{where}: variant {name!r} uses {f}, which has no checksum in files")
        if self.fusion is not None:
            if not self.fusion.file.lower().endswith(".onnx") or self.fusion.file not in self.files:
                raise BundleError(f"{where}: fusion.file {self.fusion.file!r} must be an .onnx file with a checksum "
                                  "in files")

    def check_written(self) -> None:
        """Every check a reader applies (types and limits too) on this manifest as it will be written, so that no
        writer makes a bundle that cannot be loaded."""
        Manifest.from_json(self.to_json())

    def files_of(self, variant: str) -> list[str]:
        """Every file a variant needs: its graph and its head."""
        v = self.variants[variant]
        return [*v.files, self.heads[v.head].file]

    def shared_files(self) -> list[str]:
        """The files that serve every variant: the fusion graph, when there is one."""
        return [self.fusion.file] if self.fusion else []

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(f"{where} must hold a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            old = "; its graphs hold their head, which this edge-ser keeps apart (for `edge-ser adapt`)" \
                if version in (1, 2) else ""
            raise BundleError(f"{where} has schema_version {str(version)[:20]}{old}; this edge-ser reads version "
                              f"{SCHEMA_VERSION} only: re-export the bundle with `edge-ser export` (or upgrade "
                              "edge-ser)")
        manifest = _decode(cls, data, "")
        manifest.check(where)
        return manifest

    @classmethod
    def from_json(cls, text: bytes | str, where: str = MANIFEST) -> Manifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{where} is {len(text)} bytes, over the {MAX_MANIFEST_BYTES} a manifest may have")
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            raise BundleError(f"{where} is not valid JSON ({e}); re-export the bundle") from None
        except RecursionError:
            raise BundleError(f"{where} is nested too deeply to be a manifest; re-export the bundle") from None
        return cls.from_dict(data, where)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------------------------------------- decoding
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(cls, data: Any, path: str):
    """A ``cls`` instance from parsed JSON, every field checked against its annotation and ``limits``."""
    if not isinstance(data, dict):
        raise BundleError(f"{MANIFEST}: {path or 'the manifest'} must be an object, not {_kind(data)}")
    hints, kwargs = _hints(cls), {}
    for f in fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise BundleError(f"{MANIFEST}: {key} is missing; re-export the bundle")
            continue
        kwargs[f.name] = _value(hints[f.name], data[f.name], key, f.metadata)
    return cls(**kwargs)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _value(tp: Any, value: Any, key: str, meta: dict) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, key, meta)
    if origin is Literal:
        if value not in args:
            raise BundleError(f"{MANIFEST}: {key} must be one of {', '.join(map(repr, args))}, not {value!r:.60}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise BundleError(f"{MANIFEST}: {key} must be a list, not {_kind(value)}")
        _check_len(value, key, meta)
        return [_value(args[0], v, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise BundleError(f"{MANIFEST}: {key} must be an object, not {_kind(value)}")
        _check_len(value, key, meta)
        out = {}
        for k, v in value.items():
            if meta.get("pattern") is not None and not meta["pattern"].fullmatch(k):
                raise BundleError(f"{MANIFEST}: {key} has a bad name {k!r:.60} (letters, digits, . _ + - only)")
            out[k] = _value(args[1], v, f"{key}.{k}", {**meta, "pattern": None})
        return out
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _decode(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise BundleError(f"{MANIFEST}: {key} must be true or false, not {_kind(value)}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and not isinstance(value, int)):
            raise BundleError(f"{MANIFEST}: {key} must be {'an integer' if tp is int else 'a number'}, "
                              f"not {_kind(value)}")
        lo, hi = meta.get("range", (None, None))
        if (isinstance(value, float) and not math.isfinite(value)) or (lo is not None and value < lo) \
                or (hi is not None and value > hi) or abs(value) > 1e15:
            raise BundleError(f"{MANIFEST}: {key} = {str(value)[:20]} is outside {lo}..{hi}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise BundleError(f"{MANIFEST}: {key} must be a string, not {_kind(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BundleError(f"{MANIFEST}: {key} is not valid Unicode text") from None
        if len(value) > (meta.get("max_len") or MAX_STR):
            raise BundleError(f"{MANIFEST}: {key} is longer than {meta.get('max_len') or MAX_STR} characters")
        if meta.get("pattern") is not None and not meta["pattern"].fullmatch(value):
            form = "a plain name (letters, digits, . _ + - only; no paths)" if meta["pattern"] is NAME else \
                f"of the form {meta['pattern'].pattern}"
            raise BundleError(f"{MANIFEST}: {key} = {value!r:.60} is not {form}")
        return value
    raise TypeError(f"no decoder for {tp!r}")  # a schema bug, not a user error


def _check_len(value, key: str, meta: dict) -> None:
    limit = meta.get("items")
    if limit is not None and len(value) > limit:
        raise BundleError(f"{MANIFEST}: {key} has {len(value)} entries, more than {limit}")
