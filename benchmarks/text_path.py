"""The optional text path (``edge-ser run --text``), measured honestly.

No corpus here pairs emotional speech with transcripts whose words carry the emotion (IEMOCAP, MELD's audio and
MSP-Podcast cannot be had), so no fusion gain on real pairs is claimed. Measured instead:

1. **Text only, MELD test** (English TV dialogue): UA of the shipped text emotion model, 7 classes and 4
   (anger, happiness = MELD's joy, neutral, sadness; the 7-class probabilities on those 4, renormalised, as the
   fusion reads them for the ready model).
2. **Latency and memory per speech segment**, 1 thread, the ready model through ``edge-ser run``'s batch unit
   (:func:`edge_ser.run.process_file`) on EmoDB's 2 s clips: audio only; ``--text --language en``
   (whisper-tiny.en; and padded to 10 s instead of the default 5 s, for the padding's cost and word error rate);
   ``--text`` (whisper-base, language identified per segment). Wall-clock latency of each
   event (from the audio that ends the segment to the event), CPU seconds per clip, where the text path spends
   its time, peak memory (each configuration in its own process), and a Raspberry Pi projection
   (:mod:`edge_ser.bench.pi`: this machine's 1-thread CPU time x published slowdowns; nothing ran on a Pi).
3. **Negative controls**, corpora whose sentences are the same in every emotion, so the words carry none: EmoDB
   (German) and a seeded sample of nEMO (Polish). UA of the ready model's clip labels (the batch summary's
   dominant label) with ``--text`` against audio only; it must not drop by more than 0.5 points. Run as users run
   it (``--text``: the language is identified and the English text model is not used) and as a stress test
   (``--text --language en``: whisper-tiny.en writes English-sounding nonsense from German or Polish speech, so
   only the confidence gate stands between it and the fusion). The ready model learned from EmoDB, so its audio
   UA there is a training-set score, and so is nEMO's since it learned from nEMO too.
4. **ASR**: word error rate of whisper-base (language identified) on the EmoDB clips that hold a whole sentence
   (this copy cut every clip to 2 s: only the zero-padded, shorter ones are whole) against the corpus's
   published sentence texts, and on the nEMO sample against its normalised transcripts; and how often the
   language is identified right.
5. **English speech, synthetic** (when ``espeak-ng`` is installed): MELD test lines of the 4 labels read by
   espeak-ng (a flat robotic voice: the words carry the emotion, the voice hardly): word error rate of
   whisper-tiny.en and whisper-base, how often each is confident, and UA (MELD's label of the line) of audio only
   against ``--text``. Not real speech, but the only English speech with transcripts here.
6. **Synthetic pairing** (an upper bound, clearly not a measurement of real speech): each clip's audio
   probabilities fused with a MELD test line of the same emotion (drawn at random, seeded) as if Whisper had
   heard it; and with a line of a random emotion (words that say nothing of the voice) as a control.

Usage: python benchmarks/text_path.py [--data ../shared/data/emodb] [--meld MELD/data/MELD] [--nemo nEMO]
       [--clips 0] [--nemo-clips 200]
(MELD: ``git clone https://github.com/declare-lab/MELD``; nEMO: ``git clone https://github.com/amu-cai/nEMO``,
CC BY-NC-SA 4.0; --clips N limits the EmoDB clips for a quick run.)
Writes benchmarks/results/text_path.{md,json}.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from text_model import LABELS, embed, evaluate, read_meld

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EMODB_LABELS = {"W": "anger", "F": "happiness", "N": "neutral", "T": "sadness"}   # those the ready model knows
EMODB_TEXT = {   # the corpus's ten sentences (Burkhardt et al., 2005)
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
CONFIGS = {
    "audio only": None,
    "--text --language en (whisper-tiny.en)": {"language": "en"},
    "--text --language en, padded to 10 s": {"language": "en", "pad_s": 10.0},   # the padding before 5 s
    "--text (whisper-base, language identified)": {},
}
MAX_LOSS = 0.005


def emodb_files(data: Path, limit: int) -> list[Path]:
    files = sorted(p for p in data.glob("*.wav") if p.name[5] in EMODB_LABELS)
    if limit:
        files = files[::max(1, len(files) // limit)][:limit]
    return files


def ua(truth: list[str], predicted: list[str]) -> float:
    labels = sorted(set(truth))
    return float(np.mean([np.mean([p == t for p, t in zip(predicted, truth) if t == label]) for label in labels]))


# ---------------------------------------------------------------------------------------------- one configuration
def worker(config: dict | None, files: list[str]) -> dict:
    """Run one configuration over the files in this process: per file its records, times and text facts."""
    from edge_ser.bundle import ready_model_path
    from edge_ser.run import Settings, process_file, recognizer_for

    text = None
    if config is not None:
        from edge_ser.fusion import TextOptions
        from edge_ser.transcribe import TranscribeOptions
        text = TextOptions(TranscribeOptions(threads=1, **config))
    settings = Settings(str(ready_model_path()), threads=1, text=text)
    t0 = time.perf_counter()
    rec = recognizer_for(settings)
    load_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spent = {"transcribe": [], "text_model": []}
    if rec.text is not None:   # time the two parts of the text path where they run
        def timed(fn, key):
            def call(*a):
                c = time.process_time()
                out = fn(*a)
                spent[key].append(time.process_time() - c)
                return out
            return call
        rec.text.transcriber = timed(rec.text.transcriber, "transcribe")
        rec.text.model.probs = timed(rec.text.model.probs, "text_model")
    out = []
    for path in files:
        c0 = time.process_time()
        records = process_file(path, settings)
        cpu = time.process_time() - c0
        events = [r for r in records if "label" in r]
        summary = next((r["summary"] for r in records if "summary" in r), {})
        item = {"file": Path(path).name, "cpu_s": cpu, "label": summary.get("dominant"),
                "latency_ms": [e["latency_ms"] for e in events],
                "events": [{k: e.get(k) for k in ("label", "probs", "audio_probs", "text", "language", "text_probs")}
                           for e in events]}
        out.append(item)
    return {"load_s": load_s, "rss_loaded_mb": rss_loaded / 1024,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "spent": spent, "files": out}


def run_config(name: str, config: dict | None, files: list[Path]) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"config": config, "files": [str(f) for f in files]})]
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    print(f"{name}: {len(files)} clips in {time.time() - t0:.0f} s", file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- the parts
def meld_text_only(meld: Path) -> dict:
    from edge_ser.textemotion import TextEmotion

    model = TextEmotion(threads=1)
    texts, y, _ = read_meld(meld, "test")
    t0 = time.process_time()
    probs = model.head.probs(embed(model, texts))[:, [model.labels.index(x) for x in LABELS]]
    cpu_ms = (time.process_time() - t0) / len(texts) * 1e3
    return {**evaluate(probs, y), "n": len(texts), "cpu_ms_per_line": round(cpu_ms, 2),
            "probs": probs, "truth": [LABELS[v] for v in y], "labels": LABELS}


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def wer(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1]), len(ref)


def whole_clips(files: list[Path]) -> set[str]:
    """The clips this copy zero-padded to 2 s (shorter originals, so whole sentences)."""
    import soundfile as sf
    whole = set()
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        if np.all(x[-int(0.05 * sr):] == 0):
            whole.add(f.name)
    return whole


def pi_rows(cpu_ms: float) -> dict:
    from edge_ser.bench.pi import PI_SLOWDOWN
    return {board: [round(cpu_ms * lo), round(cpu_ms * hi)] for board, (lo, hi) in PI_SLOWDOWN.items()}


def synthetic(audio: dict, meld: dict | None, labels_of: dict[str, str], weight: float, seed: int = 0) -> dict | None:
    """Audio probabilities of each clip fused with a MELD test line of the same (or a random) emotion."""
    if meld is None:
        return None
    from edge_ser.fusion import fuse, label_map

    rng = np.random.default_rng(seed)
    labels = list(next(iter(audio.values())).keys())
    found = label_map(labels, meld["labels"])
    mapped = np.array(sorted(found))
    tidx = np.array([found[i] for i in sorted(found)])
    by_label = {lab: np.flatnonzero(np.array(meld["truth"]) == lab) for lab in labels}
    truth, a_pred, same_pred, rand_pred = [], [], [], []
    for name, p in audio.items():
        t = labels_of[name]
        a = np.array([p[k] for k in labels])
        for pool, out in ((by_label[t], same_pred), (by_label[labels[rng.integers(len(labels))]], rand_pred)):
            tp = meld["probs"][rng.choice(pool)][tidx]
            out.append(labels[int(np.argmax(fuse(a, tp / tp.sum(), mapped, weight)))])
        truth.append(t)
        a_pred.append(labels[int(np.argmax(a))])
    return {"audio_ua": ua(truth, a_pred), "fused_same_emotion_line_ua": ua(truth, same_pred),
            "fused_random_emotion_line_ua": ua(truth, rand_pred), "n": len(truth), "weight": weight}


# ---------------------------------------------------------------------------------------------- report
def tts_clips(n: int, meld: Path, out: Path, seed: int = 0) -> tuple[list[Path], dict[str, str], dict[str, str]]:
    """``n`` MELD test lines of the 4 labels (seeded) read by espeak-ng into ``out``: files, labels, texts."""
    with open(meld / "test_sent_emo.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Emotion"] in ("anger", "joy", "neutral", "sadness")]
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]
    out.mkdir(parents=True, exist_ok=True)
    files, labels, texts = [], {}, {}
    for r in rows:
        line = r["Utterance"].replace("\u2019", "'")
        path = out / f"meld-test-{r['Dialogue_ID']}-{r['Utterance_ID']}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), line], check=True, timeout=60)
        files.append(path)
        labels[path.name] = {"joy": "happiness"}.get(r["Emotion"], r["Emotion"])
        texts[path.name] = line
    return files, labels, texts


def nemo_clips(folder: Path, limit: int, seed: int = 0) -> tuple[list[Path], dict[str, str], dict[str, str]]:
    """A seeded sample of nEMO's clips of the ready model's labels, their labels and normalised transcripts."""
    names = {"anger": "anger", "happiness": "happiness", "neutral": "neutral", "sadness": "sadness"}
    with open(folder / "data.tsv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["emotion"] in names]
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:limit or len(rows)]]
    return ([folder / "samples" / r["file_id"] for r in rows], {r["file_id"]: names[r["emotion"]] for r in rows},
            {r["file_id"]: r["normalized_text"] for r in rows})


def corpus_rows(runs: dict, names: set[str], truth: dict[str, str]) -> dict:
    """Per configuration: UA of the clip labels, latency, CPU, text facts, over the clips ``names``."""
    rows = {}
    for name, r in runs.items():
        files = [f for f in r["files"] if f["file"] in names]
        lat = [x for f in files for x in f["latency_ms"]]
        cpu = [f["cpu_s"] * 1e3 for f in files]
        events = [e for f in files for e in f["events"]]
        row = {"clips": len(files), "segments": len(events), "latency_ms_p50": float(np.median(lat)),
               "latency_ms_p90": float(np.percentile(lat, 90)), "cpu_ms_per_clip_p50": float(np.median(cpu)),
               "rss_peak_mb": round(r["rss_peak_mb"], 1), "load_s": round(r["load_s"], 2),
               "ua": ua([truth[f["file"]] for f in files], [f["label"] for f in files])}
        if CONFIGS[name] is not None:
            langs = {}
            for e in events:
                langs[e["language"] or "-"] = langs.get(e["language"] or "-", 0) + 1
            row.update(with_text=sum(e["text"] is not None for e in events),
                       fused=sum(e["text_probs"] is not None for e in events), languages=langs)
        rows[name] = row
    return rows


def asr(run: dict, refs: dict[str, str], language: str) -> dict:
    """Word error rate of the transcripts ``edge-ser run`` gives (its segments' texts) against ``refs``."""
    errors = total = right = 0
    for f in run["files"]:
        if f["file"] in refs:
            said = " ".join(e["text"] for e in f["events"] if e["text"])
            e, n = wer(words(refs[f["file"]]), words(said))
            errors, total = errors + e, total + n
            right += any(e["language"] == language for e in f["events"])
    return {"clips": len(refs), "wer": errors / total if total else None, f"identified_{language}": right}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "emodb")
    p.add_argument("--meld", type=Path, default=None, help="folder with MELD's test_sent_emo.csv")
    p.add_argument("--nemo", type=Path, default=None, help="nEMO's folder (data.tsv, samples/)")
    p.add_argument("--clips", type=int, default=0, help="at most this many EmoDB clips (0: all of the 4 labels)")
    p.add_argument("--nemo-clips", type=int, default=200, help="nEMO clips (a seeded sample; 0: all of the 4 labels)")
    p.add_argument("--tts", type=int, default=120, help="MELD test lines read by espeak-ng (needs --meld; 0: none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(worker(job["config"], job["files"])))
        return

    from edge_ser.bench.report import machine
    from edge_ser.fusion import DEFAULT_TEXT_WEIGHT

    result: dict = {"machine": machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    meld = meld_text_only(args.meld) if args.meld else None
    if meld:
        result["meld_text_only"] = {k: meld[k] for k in ("7", "4", "n", "cpu_ms_per_line")}
    files = emodb_files(args.data, args.clips)
    truth = {f.name: EMODB_LABELS[f.name[5]] for f in files}
    nemo, nemo_truth, nemo_text = nemo_clips(args.nemo, args.nemo_clips) if args.nemo else ([], {}, {})
    tts, tts_truth, tts_text = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="edge-ser-tts-") as tmp:
        if args.tts and args.meld and shutil.which("espeak-ng"):
            tts, tts_truth, tts_text = tts_clips(args.tts, args.meld, Path(tmp))
        runs = {name: run_config(name, config, files + nemo + tts) for name, config in CONFIGS.items()}
    rows = corpus_rows(runs, {f.name for f in files}, truth)
    for name, r in runs.items():   # where the text path spends its time, and a Pi projection (EmoDB's 2 s clips)
        if CONFIGS[name] is not None:
            segments = rows[name]["segments"]   # EmoDB's come first: one transcription each
            rows[name]["transcribe_cpu_ms_p50"] = float(np.median(r["spent"]["transcribe"][:segments]) * 1e3)
            text = r["spent"]["text_model"]   # of every segment whose gate opened (any corpus)
            rows[name]["text_model_cpu_ms_p50"] = float(np.median(text) * 1e3) if text else None
        rows[name]["pi_ms_per_clip"] = pi_rows(rows[name]["cpu_ms_per_clip_p50"])
    result["configs"] = rows
    controls = {"EmoDB": rows}
    if nemo:
        controls["nEMO"] = corpus_rows(runs, set(nemo_truth), nemo_truth)
    result["negative_control"] = {
        corpus: {name: {"ua": row["ua"], "audio_ua": c["audio only"]["ua"],
                        "change_points": round((row["ua"] - c["audio only"]["ua"]) * 100, 2),
                        "passes": row["ua"] >= c["audio only"]["ua"] - MAX_LOSS, "clips": row["clips"],
                        "with_text": row["with_text"], "fused": row["fused"], "languages": row["languages"]}
                 for name, row in c.items() if name != "audio only"}
        for corpus, c in controls.items()}
    base_run = runs["--text (whisper-base, language identified)"]
    whole = whole_clips(files)
    result["asr"] = {"EmoDB whole sentences (German)": asr(base_run, {f: EMODB_TEXT[f[2:5]] for f in whole}, "de")}
    if nemo:
        result["asr"]["nEMO (Polish)"] = asr(base_run, nemo_text, "pl")
    if tts:
        result["english_tts"] = {name: {"ua": row["ua"], "clips": row["clips"], "with_text": row.get("with_text"),
                                        "fused": row.get("fused"),
                                        **({"wer": asr(runs[name], tts_text, "en")["wer"]} if CONFIGS[name] is not None
                                           else {})}
                                 for name, row in corpus_rows(runs, set(tts_truth), tts_truth).items()}
    result["synthetic_upper_bound"] = {}
    for corpus, labels_of in (("EmoDB", truth), ("nEMO", nemo_truth)):
        audio = {f["file"]: f["events"][0]["probs"] for f in runs["audio only"]["files"]
                 if f["events"] and f["file"] in labels_of}
        if audio and meld:
            result["synthetic_upper_bound"][corpus] = synthetic(audio, meld, labels_of, DEFAULT_TEXT_WEIGHT)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_path.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (RESULTS / "text_path.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    lines = ["# The text path (`edge-ser run --text`)", "",
             f"Measured on {r['machine']['cpu']} ({r['machine']['cores']} cores, shared: load average "
             f"{r['load_average'][0]}), 1 thread; `python benchmarks/text_path.py --meld MELD/data/MELD "
             "--nemo nEMO`.", ""]
    if "meld_text_only" in r:
        m = r["meld_text_only"]
        lines += ["## Text only: MELD test (English TV dialogue)", "", "| classes | UA | WA | macro-F1 | n |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {k} | {m[k]['ua']:.3f} | {m[k]['wa']:.3f} | {m[k]['f1']:.3f} | {m[k]['n']} |" for k in ("7", "4")]
        lines += ["", f"Text model: {m['cpu_ms_per_line']} ms CPU per line, one line per call (as at run time).", ""]
    lines += ["## Latency and memory per 2 s segment (EmoDB clips, ready model, 1 thread)", "",
              "| configuration | latency p50 / p90 ms | CPU ms per clip | of which ASR / text model | peak MB | "
              "Pi 4 / Pi 5 ms (projected) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in r["configs"].items():
        parts = (f"{row['transcribe_cpu_ms_p50']:.0f} / " +
                 (f"{row['text_model_cpu_ms_p50']:.0f}" if row.get("text_model_cpu_ms_p50") else "-")) \
            if "transcribe_cpu_ms_p50" in row else "-"
        pi = row["pi_ms_per_clip"]
        pi4, pi5 = pi["Raspberry Pi 4 (Cortex-A72)"], pi["Raspberry Pi 5 (Cortex-A76)"]
        lines.append(f"| {name} | {row['latency_ms_p50']:.0f} / {row['latency_ms_p90']:.0f} | "
                     f"{row['cpu_ms_per_clip_p50']:.0f} | {parts} | {row['rss_peak_mb']:.0f} | "
                     f"{pi4[0]}-{pi4[1]} / {pi5[0]}-{pi5[1]} |")
    lines += ["", "Latency: from the audio that ends a segment to its event (wall clock, on a shared machine); CPU "
              "ms: the whole clip through `edge-ser run`'s batch unit (VAD, model, text path). Pi: CPU ms x "
              "published slowdowns (edge_ser.bench.pi); nothing ran on a Pi.", "",
              "## Negative controls: the same sentences in every emotion", "",
              "EmoDB (German) and a seeded sample of nEMO (Polish); the ready model learned from both, so their audio "
              "UAs are training-set scores. The control asks only whether the text path takes "
              "anything away: UA of each clip's label (the batch summary's dominant label) with --text against "
              "audio only.", "",
              "| corpus | configuration | clips | UA audio only | UA | change (points) | segments with text / fused | "
              "languages | loss <= 0.5 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for corpus, c in r["negative_control"].items():
        for name, row in c.items():
            langs = ", ".join(f"{k} {v}" for k, v in sorted(row["languages"].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {corpus} | {name} | {row['clips']} | {row['audio_ua']:.3f} | {row['ua']:.3f} | "
                         f"{row['change_points']:+.2f} | {row['with_text']} / {row['fused']} | {langs} | "
                         f"{'yes' if row['passes'] else 'NO'} |")
    lines += ["", "## ASR (whisper-base, language identified, int8, 5 s padding, greedy)", "",
              "| speech | clips | WER | language identified |", "| --- | ---: | ---: | ---: |"]
    for name, a in r["asr"].items():
        if a["wer"] is not None:
            ident = next(v for k, v in a.items() if k.startswith("identified_"))
            lines.append(f"| {name} | {a['clips']} | {a['wer']:.3f} | {ident} |")
    lines.append("")
    if r.get("english_tts"):
        lines += ["## English speech, synthetic: MELD test lines read by espeak-ng", "",
                  "A flat robotic voice: the words carry the emotion (MELD's label of the line), the voice hardly. "
                  "Not real speech; the only English speech with transcripts here.", "",
                  "| configuration | clips | WER | segments with text / fused | UA |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, row in r["english_tts"].items():
            wer_ = f"{row['wer']:.3f}" if row.get("wer") is not None else "-"
            seg = f"{row['with_text']} / {row['fused']}" if row.get("with_text") is not None else "-"
            lines.append(f"| {name} | {row['clips']} | {wer_} | {seg} | {row['ua']:.3f} |")
        lines.append("")
    if r.get("synthetic_upper_bound"):
        lines += ["## SYNTHETIC pairing: an upper bound, not real speech", "",
                  "Each clip's audio probabilities (audio only, its first segment) fused, with the shipped weight, "
                  "with the text probabilities of a MELD test line as if Whisper had heard that line: a line of the "
                  "clip's own emotion (words that agree with the voice: what fusion could give at best with this "
                  "text model), or of a random emotion (words unrelated to the voice).", "",
                  "| audio of | clips | weight | UA audio only | + line of the same emotion | + line of a random "
                  "emotion |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for corpus, s in r["synthetic_upper_bound"].items():
            lines.append(f"| {corpus} | {s['n']} | {s['weight']} | {s['audio_ua']:.3f} | "
                         f"{s['fused_same_emotion_line_ua']:.3f} | {s['fused_random_emotion_line_ua']:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
