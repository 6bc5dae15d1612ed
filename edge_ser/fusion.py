"""Late fusion of the voice's emotion with the emotion of the words (``edge-ser run --text``,
``Recognizer(text=True)``).

For each speech segment: Whisper's transcript (:mod:`edge_ser.transcribe`), the text emotion model's
probabilities (:mod:`edge_ser.textemotion`) on the bundle's labels that have a text counterpart, and

    fused[l] = (1 - w) * audio[l] + w * A * text[l]    for each mapped label l (A: the audio's mass on them)
    fused[l] = audio[l]                                for every other label

a linear opinion pool that leaves the probability of each label without a text counterpart as the audio gave
it, and moves no probability by more than ``w``. The weight is fixed and small (:data:`DEFAULT_TEXT_WEIGHT`): no
corpus here pairs emotional speech with transcripts whose words carry the emotion, so none can be learned, and
where voice and words disagree the voice decides.

The text is used only when the gate opens: Whisper kept the transcript (not silence, empty or a loop), is
confident of it (average token log-probability at least ``confident_logprob``), and its language is one the
text model reads (English), identified with probability at least ``language_threshold``, given with
``language``, or assumed by an English-only Whisper model.

A bundle exported from a manifest with a ``text`` column holds an attention-alignment head (the seed's model;
manifest ``fusion``): a graph in which each token of the transcript attends over the frames of the audio
encoder, trained on the user's pairs of speech and words. Where the gate opens and the bundle has one (trained
on the token states of the installed text model, over the labels of the recognizer), its probabilities are the
fused result instead of the linear pool: it learned how much the words count. The segment is tiled up to the
bundle's ``min_input_s`` and cut to its ``max_input_s``. A recognizer that ``adapt`` made has new labels: it
uses the linear pool.

Labels: a bundle label maps to a text label by name or synonym (:data:`SYNONYMS`: happiness, happy and joy are
one). Labels without a counterpart (boredom, calm, or any label made with ``edge-ser adapt`` such as
"frustrated") keep their audio probability; when fewer than two labels map, the words cannot tell them apart:
``text_probs`` stays absent and the result is the audio's (the transcript is still reported).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import BundleError, EdgeSerError
from .manifest import INPUT_NAME, LOGITS_NAME, TOKEN_MASK_NAME, TOKENS_NAME
from .transcribe import TranscribeOptions

log = logging.getLogger(__name__)
DEFAULT_TEXT_WEIGHT = 0.25
SYNONYMS = {
    "anger": ("anger", "angry", "mad"),
    "disgust": ("disgust", "disgusted"),
    "fear": ("fear", "fearful", "afraid", "scared", "anxiety", "anxious"),
    "happiness": ("happiness", "happy", "joy", "joyful"),
    "neutral": ("neutral",),
    "sadness": ("sadness", "sad"),
    "surprise": ("surprise", "surprised"),
}


@dataclass(frozen=True)
class TextOptions:
    """The text path of a :class:`~edge_ser.recognizer.Recognizer` (``Recognizer(text=TextOptions(...))``;
    ``text=True`` takes these defaults).

    Attributes
    ----------
    transcribe : how segments are transcribed (model, language, decoding limits, threads).
    weight : the text's weight in the linear pool, in [0, 1] (0: transcripts only, the probabilities stay the audio's,
        also with a bundle's alignment head).
    text_model : a folder holding a text emotion part (see :mod:`edge_ser.textemotion`); None: the shipped one.
    """

    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    weight: float = DEFAULT_TEXT_WEIGHT
    text_model: str | None = None

    def __post_init__(self):
        if not isinstance(self.transcribe, TranscribeOptions):
            raise EdgeSerError(f"TextOptions transcribe must be a TranscribeOptions, not {self.transcribe!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0 <= self.weight <= 1:
            raise EdgeSerError(f"TextOptions weight must be a number in [0, 1], not {self.weight!r}")


def text_options(text) -> TextOptions | None:
    """``Recognizer(text=...)``: False/None (no text path), True (the defaults) or a :class:`TextOptions`."""
    if text is None or text is False:
        return None
    if text is True:
        return TextOptions()
    if isinstance(text, TextOptions):
        return text
    raise EdgeSerError(f"text must be True, False or a TextOptions, not {text!r}")


def label_map(labels: list[str], text_labels: list[str]) -> dict[int, int]:
    """Bundle label index -> text label index, for the bundle labels with a text counterpart."""
    names = {label: label for label in text_labels}
    for text_label in text_labels:
        for word in SYNONYMS.get(text_label, ()):
            names.setdefault(word, text_label)
    found = {}
    for i, label in enumerate(labels):
        text_label = names.get(label.strip().lower())
        if text_label is not None and text_label not in [text_labels[j] for j in found.values()]:
            found[i] = text_labels.index(text_label)
    return found


def fuse(audio: np.ndarray, text: np.ndarray, mapped: np.ndarray, weight: float) -> np.ndarray:
    """The fused probabilities: ``text`` (probabilities over the labels ``mapped``, summing to 1) pooled with
    ``audio`` on those labels, with their total mass kept; every other label keeps its audio probability."""
    fused = np.array(audio, np.float64)
    mass = fused[mapped].sum()
    fused[mapped] = (1.0 - weight) * fused[mapped] + weight * mass * np.asarray(text, np.float64)
    return fused


class TextPath:
    """Transcriber + text emotion model + fusion; stateless (shared by a recognizer's streams and by the recognizers
    ``adapt`` makes from it: the label mapping follows the labels of each item it annotates)."""

    def __init__(self, options: TextOptions):
        from .textemotion import TextEmotion
        from .transcribe import Transcriber, require_engine

        require_engine()
        self.options = options
        self.model = TextEmotion(options.text_model, threads=options.transcribe.threads)
        self.transcriber = Transcriber(options.transcribe)
        self._maps: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def mapping(self, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(indices of ``labels`` with a text counterpart, the text label index of each)."""
        if labels not in self._maps:
            found = label_map(list(labels), self.model.labels)
            if len(found) < 2:
                log.warning("the text emotion model knows %s of the labels %s; the text path adds transcripts only",
                            "none" if not found else "only one", ", ".join(labels))
            self._maps[labels] = (np.array(sorted(found), dtype=int), np.array([found[i] for i in sorted(found)],
                                                                               dtype=int))
        return self._maps[labels]

    def annotate(self, item, x: np.ndarray, prediction: Callable, aligned: AlignedFusion | None = None) -> None:
        """Add the text keys to ``item`` (an Event or Prediction of the 16 kHz samples ``x``), fusing its
        probabilities when the gate opens (by ``aligned``, a bundle's alignment head, when it serves these labels);
        ``prediction(p)`` makes label and unsure of probabilities ``p`` (over the labels of ``item.probs``, in
        their order)."""
        labels = tuple(item.probs)
        mapped, text_index = self.mapping(labels)
        if aligned is not None and (aligned.labels != labels or not aligned.takes(x) or self.options.weight == 0):
            aligned = None
        item.audio_probs = dict(item.probs)
        t = self.transcriber(x)
        if t.text is None:
            return
        item.text, item.language = t.text, t.language
        if not t.confident or t.language not in self.model.languages or (len(mapped) < 2 and aligned is None):
            return
        states = self.model.states([t.text]) if aligned is not None else None
        if len(mapped) >= 2:
            p = (self.model.probs(t.text) if states is None else self.model.probs_of(*states))[text_index]
            p = p / p.sum()
            item.text_probs = {labels[i]: float(v) for i, v in zip(mapped, p)}
        fused = prediction(aligned(x, *states) if aligned is not None else
                           fuse(np.array([item.probs[label] for label in labels]), p, mapped, self.options.weight))
        item.label, item.probs, item.unsure = fused.label, fused.probs, fused.unsure


def aligned_fusion(bundle, model, threads: int | None = None) -> AlignedFusion | None:
    """The bundle's alignment head, when it has one that reads the token states of ``model`` (the text emotion
    model in use); otherwise None, and the linear pool fuses."""
    f = bundle.manifest.fusion
    if f is None:
        return None
    if f.text_encoder != model.encoder_sha256:
        log.warning("the bundle's alignment head was trained on another text encoder (SHA-256 %s...) than the one "
                    "installed (%s...): the linear pool fuses instead", f.text_encoder[:12], model.encoder_sha256[:12])
        return None
    return AlignedFusion(bundle, threads)


class AlignedFusion:
    """A bundle's attention-alignment head (manifest ``fusion``): ``self(x, states, mask)`` are the probabilities
    over the bundle's labels of the 16 kHz samples ``x`` (at most the bundle's ``max_input_s``: see :meth:`takes`)
    and the token states of their transcript. The graph is checked with a call at load."""

    def __init__(self, bundle, threads: int | None = None):
        from .engine import ort_session

        spec, f = bundle.manifest.input, bundle.manifest.fusion
        self.labels, self.text_encoder, self.text_dim = tuple(bundle.labels), f.text_encoder, f.text_dim
        self.min_input = max(1, round(spec.min_input_s * spec.sample_rate))
        self.max_input = max(self.min_input, round(spec.max_input_s * spec.sample_rate))
        self.name = str(bundle.path / f.file)
        self.session = ort_session(bundle.read(f.file), threads, self.name, [INPUT_NAME, TOKENS_NAME, TOKEN_MASK_NAME])
        outputs = {o.name: o.type for o in self.session.get_outputs()}
        if outputs.get(LOGITS_NAME) != "tensor(float)":
            raise BundleError(f"{self.name} has no float output {LOGITS_NAME!r} (outputs {sorted(outputs)}); "
                              "re-export the bundle")
        self(np.zeros(self.min_input, np.float32), np.zeros((1, 1, self.text_dim), np.float32),
             np.ones((1, 1), np.float32))

    def takes(self, x: np.ndarray) -> bool:
        """Whether the head learned on audio this long (longer segments are fused by the linear pool: their words
        would attend over audio cut at ``max_input_s``)."""
        return len(x) <= self.max_input

    def __call__(self, x: np.ndarray, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from .engine import _reason

        x = np.asarray(x, np.float32)
        x = np.resize(x, self.min_input) if len(x) < self.min_input else x[:self.max_input]
        try:
            z = np.asarray(self.session.run([LOGITS_NAME], {INPUT_NAME: x[None], TOKENS_NAME: states,
                                                            TOKEN_MASK_NAME: mask})[0], np.float64).reshape(-1)
        except Exception as err:   # ONNX Runtime's own error types: a graph that does not take these inputs
            raise BundleError(f"{self.name} cannot run on audio{[1, len(x)]} and tokens{list(states.shape)}: "
                              f"{_reason(err)}; re-export the bundle") from None
        if z.shape != (len(self.labels),) or not np.isfinite(z).all():
            raise BundleError(f"{self.name} returned {z.shape[0]} logits (or non-numbers) for {len(self.labels)} "
                              "labels; re-export the bundle")
        e = np.exp(z - z.max())
        return e / e.sum()
