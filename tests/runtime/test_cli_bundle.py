"""CLI surface, the bundle contract (typed manifest, checksums, atomic and safe writes, pack) and metrics."""
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from edge_ser import manifest as mf
from edge_ser.bundle import atomic_directory, check_out, load_bundle, pack, remove_stale_partials, write_bundle
from edge_ser.errors import BundleError, EdgeSerError
from edge_ser.manifest import MANIFEST
from edge_ser.metrics import confusion, scores

COMMANDS = ["export", "run", "eval", "bench", "info", "pack"]


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "edge_ser", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


def test_help_lists_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_real_help(command):
    r = cli(command, "--help")
    assert r.returncode == 0 and "--help" in r.stdout and "Usage" in r.stdout
    assert "not implemented" not in r.stdout.lower()


HEAD = {"h": mf.Head(file="h.npz", dim=1)}


def fake_bundle(root, **variant_fields):
    (root / "m.onnx").write_bytes(b"graph bytes")
    (root / "h.npz").write_bytes(b"head bytes")
    return write_bundle(root, mf.Manifest(
        labels=["anger", "neutral"], input=mf.Input(window_s=2.0, hop_s=1.0), default_variant="fp32", heads=HEAD,
        variants={"fp32": mf.Variant(files=["m.onnx"], format="onnx", precision="fp32", model="student", head="h",
                                     metrics=mf.Metrics(ua=0.5, wa=0.5, f1=0.5, n=4), **variant_fields)}))


def test_manifest_roundtrip_and_info_table(tmp_path):
    m = fake_bundle(tmp_path)
    b = load_bundle(tmp_path)
    assert b.manifest == m and b.labels == ["anger", "neutral"] and b.variant()[0] == "fp32"
    assert mf.Manifest.from_json(m.to_json()) == m
    assert "fp32" in (tmp_path / "MODEL_CARD.md").read_text()
    r = cli("info", str(tmp_path))
    assert r.returncode == 0 and "anger, neutral" in r.stdout and "fp32" in r.stdout


def test_unknown_keys_are_ignored_and_values_range_checked(tmp_path):
    fake_bundle(tmp_path)
    doc = json.loads((tmp_path / MANIFEST).read_text())
    doc["from_the_future"] = {"x": 1}
    doc["variants"]["fp32"]["also_new"] = [1, 2]       # a variant with an extra key was a TypeError
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    assert load_bundle(tmp_path).variant()[0] == "fp32"


def test_unknown_variant_lists_known(tmp_path):
    fake_bundle(tmp_path)
    with pytest.raises(BundleError, match="has: fp32"):
        load_bundle(tmp_path).variant("int4")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d / "m.onnx").write_bytes(b"graph bytez"), "SHA-256"),
    (lambda d: (d / "m.onnx").unlink(), "missing"),
    (lambda d: (d / MANIFEST).write_text(json.dumps({**json.loads((d / MANIFEST).read_text()),
                                                       "schema_version": 99})), "schema_version 99"),
    (lambda d: (d / MANIFEST).write_text("{not json"), "not valid JSON"),
    (lambda d: (d / MANIFEST).unlink(), "not an edge-ser bundle"),
])
def test_bad_bundles_are_refused(tmp_path, mutate, message):
    fake_bundle(tmp_path)
    mutate(tmp_path)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path)
    r = cli("info", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_atomic_directory_removes_partial_output(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "half.onnx").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        fake_bundle(tmp)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (out / "m.onnx").exists()
    with pytest.raises(EdgeSerError, match="--overwrite"):
        with atomic_directory(out):
            pass
    with atomic_directory(out, overwrite=True) as tmp:   # a bundle is replaced, and nothing else is left
        fake_bundle(tmp)
        (tmp / "m.onnx").write_bytes(b"new graph")
        write_bundle(tmp, load_bundle(tmp, verify=False).manifest)
    assert (out / "m.onnx").read_bytes() == b"new graph" and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_pack_keeps_one_variant_with_its_own_checksums(tiny_bundle, tmp_path):
    full = load_bundle(tiny_bundle)
    m = pack(full, "fp32", tmp_path / "slim")
    slim = load_bundle(tmp_path / "slim")
    assert list(slim.variants) == ["fp32"] and slim.manifest.default_variant == "fp32"
    assert sorted(p.name for p in (tmp_path / "slim").iterdir()) == ["MODEL_CARD.md", "edge-ser.json", "head.npz",
                                                                    "model.onnx"]
    assert m.files == slim.manifest.files and slim.labels == full.labels
    r = cli("info", str(tmp_path / "slim"))
    assert r.returncode == 0, r.stderr
    r = cli("pack", str(tiny_bundle), "--target", "x86-avx2", "--out", str(tmp_path / "slim2"))
    assert r.returncode == 0, r.stderr
    assert len(load_bundle(tmp_path / "slim2").variants) == 1
    if "ov-fp32" in full.variants:   # several variants: the first is the default
        pack(full, "ov-fp32,fp32", tmp_path / "two")
        two = load_bundle(tmp_path / "two")
        assert list(two.variants) == ["ov-fp32", "fp32"] and two.manifest.default_variant == "ov-fp32"
        assert sorted(two.manifest.files) == ["head.npz", "model.bin", "model.onnx", "model.xml"]
    r = cli("pack", str(tiny_bundle), "--variant", "int4", "--out", str(tmp_path / "none"))
    assert r.returncode == 2 and "no variant 'int4'" in r.stderr and not (tmp_path / "none").exists()


def test_scores_against_hand_computed_values():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 1]
    s = scores(y_true, y_pred, 3)
    # recalls 3/4, 1/2, 1/2 ; precisions 3/4, 1/3, 1 ; F1s 3/4, 2/5, 2/3
    assert s["ua"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert s["wa"] == pytest.approx(5 / 8)
    assert s["f1"] == pytest.approx((0.75 + 0.4 + 2 / 3) / 3)
    assert s["n"] == 8
    assert confusion(y_true, y_pred, 3).tolist() == [[3, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_scores_ignore_absent_classes():
    assert scores([0, 0], [0, 1], 3)["ua"] == pytest.approx(0.5)
    assert np.isnan(scores([], [], 3)["ua"])


def test_stale_partials_of_a_dead_process_are_removed(tmp_path):
    out = tmp_path / "bundle"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".bundle.partial-{dead.stdout.strip()}-abc"
    stale.mkdir()
    (stale / ".edge-ser-partial").touch()
    (stale / "big.onnx").write_bytes(b"x" * 100)
    mine = tmp_path / f".bundle.partial-{os.getpid()}-def"     # a live process's: left alone
    mine.mkdir()
    (mine / ".edge-ser-partial").touch()
    unmarked = tmp_path / ".bundle.partial-1-ghi"            # not ours (no mark): left alone
    unmarked.mkdir()
    assert remove_stale_partials(out) == 1
    assert not stale.exists() and mine.exists() and unmarked.exists()


def test_check_out_refuses_what_is_not_a_bundle(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgeSerError, match="is a file"):
        check_out(tmp_path / "file", overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(EdgeSerError, match="not an edge-ser bundle"):
        check_out(tmp_path / "mine", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(EdgeSerError, match="symbolic link"):
        check_out(tmp_path / "link", overwrite=True)
    monkeypatch.chdir(tmp_path / "mine")
    with pytest.raises(EdgeSerError, match="working directory"):
        check_out(tmp_path / "mine", overwrite=True)
    with pytest.raises(EdgeSerError, match="working directory"):
        check_out(tmp_path, overwrite=True)
    check_out(tmp_path / "new" / "bundle", overwrite=False)


def test_auto_picks_the_fastest_accurate_student_made_for_the_cpu(tmp_path):
    from edge_ser.targets import choose_variant

    def v(model, precision, ua, targets=(), latency=None, measured="x86-avx2", fmt="onnx", head="h"):
        files = [f"{len(variants)}.onnx"] if fmt == "onnx" else [f"{len(variants)}.xml", f"{len(variants)}.bin"]
        for f in files:
            (tmp_path / f).write_bytes(b"x")
        return mf.Variant(files=files, format=fmt, precision=precision, model=model, head=head, targets=list(targets),
                          metrics=mf.Metrics(ua=ua, wa=ua, f1=ua, n=10, target=measured),
                          latency_ms={"x86-avx2": latency} if latency else {})
    variants = {}
    for name, args in {"teacher": ("teacher", "fp32", 0.90), "fp32": ("student", "fp32", 0.85, (), 17.0),
                       "u8u8": ("student", "int8", 0.85, ("x86-avx2",), 13.0),
                       "u8s8": ("student", "int8", 0.60, ("x86-vnni", "arm64", "arm64-dotprod"), 12.0),
                       "ov-int8": ("student", "int8", 0.87, ("x86-vnni", "x86-avx2"), 18.0, "x86-avx2",
                                   "openvino"),
                       # the fast student: never what balanced runs (the recipe's model choice), what speed runs
                       "fast": ("student", "int8", 0.88, ("x86-avx2",), 5.0, "x86-avx2", "onnx", "fast")}.items():
        variants[name] = v(*args)
    (tmp_path / "h.npz").write_bytes(b"x")
    write_bundle(tmp_path, mf.Manifest(labels=["a", "b"], input=mf.Input(window_s=2.0, hop_s=1.0),
                                       variants=variants, default_variant="fp32",
                                       heads={**HEAD, "fast": HEAD["h"]}))
    b = load_bundle(tmp_path)
    onnx_only = ["onnxruntime"]
    assert choose_variant(b, target="x86-avx2", backends=onnx_only).name == "u8u8"        # fastest, accurate
    assert choose_variant(b, target="x86-avx2").name == "ov-int8"                          # 0.87: u8u8 too far
    # on ARM the u8s8 variant's saturated x86 score does not count; the teacher is never picked
    assert choose_variant(b, target="arm64", backends=onnx_only).name == "u8s8"
    assert choose_variant(b, target="generic", backends=onnx_only).name == "fp32"
    # --prefer: accuracy lets the teacher compete, speed ignores accuracy
    assert choose_variant(b, target="x86-avx2", prefer="accuracy").name == "teacher"
    assert choose_variant(b, target="x86-avx2", prefer="speed").name == "fast"          # 5 ms
    assert choose_variant(b, target="x86-avx2", prefer="speed", backends=onnx_only).name == "fast"
    with pytest.raises(EdgeSerError, match="unknown preference"):
        choose_variant(b, prefer="fast")


READY = Path(str(resources.files("edge_ser") / "models" / "general"))   # the installed package's, as `run` finds it


@pytest.mark.skipif(not (READY / MANIFEST).is_file(), reason="the ready model is not built (benchmarks/ready_model.py)")
def test_the_ready_model_runs_with_no_bundle_argument(tmp_path):
    import soundfile as sf
    from conftest import speechlike
    r = cli("info")
    assert r.returncode == 0, r.stderr
    assert "anger, happiness, neutral, sadness" in r.stdout and "auto picks" in r.stdout
    sf.write(tmp_path / "clip.wav", np.concatenate([np.zeros(8000, np.float32), speechlike(2.0, 0.5)]), 16000)
    r = cli("run", "--input", str(tmp_path / "clip.wav"), "--vad", "energy")   # a synthetic sound: not speech to silero
    assert r.returncode == 0, r.stderr
    event = json.loads(r.stdout.splitlines()[0])
    assert event["label"] in ("anger", "happiness", "neutral", "sadness")
    card = (READY / "MODEL_CARD.md").read_text()
    assert "CC BY 4.0" in card and "CC BY-NC-SA 4.0" in card and "leave-one-corpus-out" in card
    b = load_bundle(READY)   # checksums verified
    assert b.manifest.heads["student"].temperature != 1.0   # a calibrated head
    assert sum(f.bytes for f in b.manifest.files.values()) < 32e6   # the student and the fast student in int8


# ------------------------------------------------------------------------------- red team r3
def test_version_prints_the_package_version():
    import edge_ser
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edge-ser {edge_ser.__version__}", (r.stdout, r.stderr)


@pytest.mark.parametrize("variants", ["", ",", " , ", "fp32,"])
def test_pack_refuses_empty_variant_names(tiny_bundle, tmp_path, variants):
    """N8: '' was a traceback, ',' silently became the default variant."""
    r = cli("pack", str(tiny_bundle), "--out", str(tmp_path / "p"), "--variant", variants)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "empty variant name" in r.stderr, r.stderr
    assert not (tmp_path / "p").exists()
    with pytest.raises(EdgeSerError, match="empty variant name"):
        pack(load_bundle(tiny_bundle), variants, tmp_path / "p")


def test_pack_for_a_target_the_bundle_has_no_variant_for_says_so(bundle_copy, tmp_path):
    """N26: packing --target arm64 out of an x86-only bundle wrote an x86 variant without a word."""
    from dataclasses import replace
    b = load_bundle(bundle_copy)
    only = {"fp32": replace(b.variants["fp32"], targets=["x86-avx2"])}
    write_bundle(bundle_copy, replace(b.manifest, variants=only))
    r = cli("pack", str(bundle_copy), "--target", "arm64", "--out", str(tmp_path / "arm"))
    assert r.returncode == 0 and "no variant made for arm64" in r.stderr and "made for x86-avx2" in r.stderr, r.stderr
    r = cli("pack", str(bundle_copy), "--target", "x86-avx2", "--out", str(tmp_path / "x86"))
    assert r.returncode == 0 and "no variant made for" not in r.stderr, r.stderr


def ir_and_onnx_bundle(root: Path, ir_only: bool = False):
    """An ONNX int8 variant measured fastest (on onnxruntime) and an OpenVINO IR one, equally accurate."""
    variants = {}
    if not ir_only:
        (root / "q.onnx").write_bytes(b"x")
        variants["u8s8"] = mf.Variant(files=["q.onnx"], format="onnx", precision="int8", model="student", head="h",
                                      metrics=mf.Metrics(ua=0.85, wa=0.85, f1=0.85, n=10),
                                      latency_ms={"x86-avx2": 6.5})
    for f in ("ov.xml", "ov.bin", "h.npz"):
        (root / f).write_bytes(b"x")
    variants["ov-fp32"] = mf.Variant(files=["ov.xml", "ov.bin"], format="openvino", precision="fp32",
                                     model="student", head="h", metrics=mf.Metrics(ua=0.85, wa=0.85, f1=0.85, n=10),
                                     latency_ms={"x86-avx2": 14.2})
    write_bundle(root, mf.Manifest(labels=["a", "b"], input=mf.Input(window_s=2.0, hop_s=1.0), variants=variants,
                                   default_variant=next(iter(variants)), heads=HEAD))
    return load_bundle(root)


def test_auto_with_a_backend_prefers_the_variants_made_for_it(tmp_path):
    """N14: --backend openvino ranked ONNX variants by the latency ONNX Runtime gave them at export."""
    from edge_ser.targets import choose_variant
    b = ir_and_onnx_bundle(tmp_path)
    both = ["onnxruntime", "openvino"]
    assert choose_variant(b, target="x86-avx2", backends=both).name == "u8s8"
    assert choose_variant(b, "onnxruntime", target="x86-avx2", backends=both).name == "u8s8"
    choice = choose_variant(b, "openvino", target="x86-avx2", backends=both)
    assert choice.name == "ov-fp32" and "14.2 ms" in choice.reason


def test_engine_messages_name_the_real_problem(tiny_bundle, tmp_path):
    """N26: an IR-only bundle on --backend onnxruntime said "pip install edge-ser[openvino]" although it was
    installed; an unknown backend said no variant runs."""
    from edge_ser.engine import open_engine
    from edge_ser.recognizer import Recognizer
    from edge_ser.targets import choose_variant
    b = ir_and_onnx_bundle(tmp_path, ir_only=True)
    with pytest.raises(BundleError, match="OpenVINO IR; run them with --backend openvino"):
        choose_variant(b, "onnxruntime", target="x86-avx2", backends=["onnxruntime", "openvino"])
    for make in (open_engine, Recognizer):
        with pytest.raises(EdgeSerError, match="unknown backend 'tensorrt'"):
            make(tiny_bundle, "auto", backend="tensorrt")


@pytest.mark.skipif(not (READY / MANIFEST).is_file(), reason="the ready model is not built (benchmarks/ready_model.py)")
def test_the_python_api_loads_the_ready_model_with_no_bundle():
    # newcomer item 3: Recognizer() was a TypeError; the ready model was only reachable through edge_ser.cli
    from edge_ser.bundle import ready_model_path
    from edge_ser.recognizer import Recognizer

    rec = Recognizer()
    assert rec.bundle.path == ready_model_path() == READY
    assert rec.labels == ["anger", "happiness", "neutral", "sadness"] and rec.vad == "silero"


def corpus_of(root, labels):
    """Two speech-like clips per label (the tiny graph labels loudness) in LABEL/ folders."""
    import soundfile as sf
    from conftest import speechlike
    for label, amp in labels.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            sf.write(root / label / f"{i}.wav", speechlike(1.0, amp, seed=i), 16000)
    return root


def test_eval_maps_labels_and_leaves_out_those_the_model_does_not_know(tiny_bundle, tmp_path):
    # issue item 9: `eval --data emodb` on the ready model stopped at "unknown label(s) boredom, ..."
    data = corpus_of(tmp_path / "c", {"anger": 0.8, "sadness": 0.005, "calm": 0.05, "boredom": 0.05})
    r = cli("eval", str(tiny_bundle), "--data", str(data), "--label-map", "calm=neutral", "--variant", "fp32",
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["variants"]["fp32"]["n"] == 6
    assert "skipped 2 of 8: 2 label 'boredom' unknown to the model" in r.stderr
    r = cli("eval", str(tiny_bundle), "--data", str(data), "--label-map", "calm")
    assert r.returncode == 2 and r.stderr.startswith("error: Invalid value for '--label-map'")
    r = cli("eval", str(tiny_bundle), "--data", str(corpus_of(tmp_path / "d", {"calm": 0.05})))
    assert r.returncode == 2 and "none of its labels (calm) is one the model knows" in r.stderr
    assert "--label-map" in r.stderr


def test_eval_scores_the_variants_the_installed_engines_run(tiny_bundle, tmp_path, monkeypatch, caplog):
    # issue item 9: on a runtime-only install eval stopped at "the openvino backend needs OpenVINO"
    from edge_ser import targets
    from edge_ser.evaluate import evaluate_bundle

    if "ov-fp32" not in load_bundle(tiny_bundle).variants:
        pytest.skip("openvino is not installed: the tiny bundle has no IR variant")
    data = corpus_of(tmp_path / "c", {"anger": 0.8, "sadness": 0.005})
    monkeypatch.setattr(targets, "installed_backends", lambda: ["onnxruntime"])
    result = evaluate_bundle(tiny_bundle, data)
    assert list(result["variants"]) == ["fp32"]
    assert "not scoring variant ov-fp32: it needs openvino (pip install edge-ser[openvino])" in caplog.text
    with pytest.raises(EdgeSerError, match="no variant of .* runs with the engines installed here"):
        monkeypatch.setattr(targets, "installed_backends", lambda: [])
        evaluate_bundle(tiny_bundle, data)
