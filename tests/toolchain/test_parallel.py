"""Distillation and feature extraction under torchrun (2 CPU processes, gloo) match one process."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCRIPT = """
import json, sys
import numpy as np
import torch
from edge_ser_export import parallel
from edge_ser_export.distill import DistillConfig, distill
from edge_ser_export.features import embed
from edge_ser_export.teachers import load_teacher

parallel.init("cpu")
torch.set_num_threads(1)
teacher = load_teacher(sys.argv[1])
rng = np.random.default_rng(0)
clips = [(0.1 * rng.standard_normal(int(16000 * rng.uniform(0.6, 1.4)))).astype(np.float32) for _ in range(10)]
features = embed(teacher, clips, show_progress=False)
student, history = distill(teacher, clips, DistillConfig(epochs=2, batch=4, augment=1, lr=1e-3, ffn=64))
if parallel.is_main():
    torch.save(student.state_dict(), sys.argv[2] + "/student.pt")
    np.save(sys.argv[2] + "/features.npy", features)
    json.dump([h["loss"] for h in history], open(sys.argv[2] + "/losses.json", "w"))
"""


def run(cmd, out):
    out.mkdir()
    done = subprocess.run(cmd + [str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return (torch.load(out / "student.pt"), np.load(out / "features.npy"),
            json.loads((out / "losses.json").read_text()))


def test_two_processes_match_one(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                                     decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     num_mel_bins=80, max_source_positions=1500, vocab_size=100, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    transformers.WhisperModel(cfg).save_pretrained(tmp_path / "teacher")
    (tmp_path / "script.py").write_text(SCRIPT)
    args = [str(tmp_path / "script.py"), str(tmp_path / "teacher")]
    one = run([sys.executable, *args], tmp_path / "one")
    two = run([str(torchrun) if torchrun.exists() else "torchrun", "--standalone", "--nproc_per_node", "2", *args],
              tmp_path / "two")
    np.testing.assert_allclose(two[1], one[1], rtol=1e-5, atol=1e-6)          # features: gathered in order
    np.testing.assert_allclose(two[2][1:], one[2][1:], rtol=1e-4)              # the same losses, epoch by epoch
    for name, value in one[0].items():
        torch.testing.assert_close(two[0][name], value, rtol=1e-4, atol=1e-5)
