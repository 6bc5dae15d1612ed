"""Teachers: Whisper rebuilt from weights vs transformers, CTranslate2 loader, wav2vec 2.0 family, students, ONNX."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edge_ser.errors import EdgeSerError  # noqa: E402
from edge_ser_export.teachers import (Encoder, LogMel, MatMulConv1d, WhisperDims, WhisperEncoder,  # noqa: E402
                                     ct2_to_hf_encoder, load_teacher, make_student, offline_whisper_dir, read_ct2,
                                     teacher_prefix)



def speechlike(n, seed=0):
    """Harmonics with a wobbling pitch, an envelope and a little noise: a spectrum with real dynamic range."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    return (0.2 * x + 0.003 * rng.standard_normal(n)).astype(np.float32)


def tiny_whisper_config(**kw):
    return transformers.WhisperConfig(**{**dict(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1), **kw})


def hf_whisper_states(encoder, mel):
    out = encoder(mel, output_hidden_states=True)
    return torch.stack(out.hidden_states)


def tiny_config(kind):
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, vocab_size=10)
    cls = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig,
           "wavlm": transformers.WavLMConfig, "data2vec-audio": transformers.Data2VecAudioConfig}[kind]
    if kind == "data2vec-audio":
        common["num_conv_pos_embeddings"] = 5
    return cls(**common)


def save_tiny(kind, root, do_normalize=None):
    torch.manual_seed(0)
    transformers.AutoModel.from_config(tiny_config(kind)).save_pretrained(root)
    if do_normalize is not None:
        transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(root)
    return root


def tiny_whisper_teacher(n_layer=3, n_state=32, n_head=2):
    torch.manual_seed(0)
    return Encoder(WhisperEncoder(WhisperDims(n_state=n_state, n_head=n_head, n_layer=n_layer)), "tiny", {}).eval()


# ------------------------------------------------------------------------------------------------- whisper
def test_log_mel_matches_whisper_feature_extractor():
    audio = np.zeros(480000, dtype=np.float32)
    audio[:48000] = speechlike(48000)
    ref = transformers.WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np").input_features
    ours = LogMel()(torch.from_numpy(audio)[None]).numpy()
    assert ours.shape == ref.shape == (1, 80, 3000)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("length", [201, 400, 16001])
def test_log_mel_graph_matches_whisper_on_short_and_batched_audio(tmp_path, length):
    """The exported log-mel (its two-stage DFT) gives Whisper's features, unpadded, for each row of a batch."""
    ort = pytest.importorskip("onnxruntime")
    from edge_ser_export import graph
    audio = np.stack([speechlike(length, seed) * gain for seed, gain in ((0, 1.0), (1, 0.001), (2, 30.0))])
    fe = transformers.WhisperFeatureExtractor()
    ref = np.stack([fe(a, sampling_rate=16000, return_tensors="np", padding="do_not_pad").input_features[0]
                    for a in audio])
    path = graph.export_onnx(torch.nn.Sequential(LogMel()), tmp_path / "mel.onnx")
    ours = ort.InferenceSession(str(path)).run(None, {"audio": audio.astype(np.float32)})[0]
    assert ours.shape == ref.shape == (3, 80, length // 160)
    assert np.abs(ours - ref).max() < 1e-4


def test_log_mel_variable_length_and_per_utterance_max():
    x = torch.from_numpy(speechlike(32000))[None]
    mel = LogMel()(torch.cat([x, 0.01 * x]))
    assert mel.shape == (2, 80, 200)
    # 40 dB quieter is exactly 1 lower everywhere only if the 80 dB floor follows each utterance's own maximum
    torch.testing.assert_close(mel[1], mel[0] - 1.0, atol=1e-4, rtol=0)


def test_whisper_encoder_matches_transformers(tmp_path):
    torch.manual_seed(0)
    transformers.WhisperModel(tiny_whisper_config()).save_pretrained(tmp_path)
    ref_encoder = transformers.WhisperModel.from_pretrained(tmp_path).encoder.eval()
    teacher = load_teacher(str(tmp_path))
    assert (teacher.kind, teacher.n_layers, teacher.dim) == ("whisper", 3, 32)
    mel = torch.randn(2, 80, 3000)
    with torch.no_grad():
        ref = hf_whisper_states(ref_encoder, mel)
        ours = teacher.encoder.encode(mel)
    assert ours.shape == ref.shape == (3, 2, 1500, 32)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name, blocks, dim", [("whisper-tiny.en", 4, 384), ("whisper-base", 6, 512)])
def test_offline_teacher_matches_transformers(name, blocks, dim):
    if offline_whisper_dir(name) is None:
        pytest.skip(f"the packages of {name} are not installed")
    teacher = load_teacher(name)
    assert (teacher.kind, teacher.n_layers, teacher.dim) == ("whisper", blocks + 1, dim)
    sd, n_head = ct2_to_hf_encoder(read_ct2(offline_whisper_dir(name) / "model.bin", prefix="encoder/"))
    ref_encoder = transformers.WhisperModel(transformers.WhisperConfig(
        d_model=dim, encoder_layers=blocks, encoder_attention_heads=n_head, encoder_ffn_dim=4 * dim, decoder_layers=1,
        decoder_attention_heads=n_head, num_mel_bins=80, max_source_positions=1500)).encoder.eval()
    ref_encoder.load_state_dict(sd)
    audio = np.zeros((1, 480000), dtype=np.float32)
    audio[0, :32000] = speechlike(32000)
    with torch.no_grad():
        mel = torch.from_numpy(transformers.WhisperFeatureExtractor()(
            audio[0], sampling_rate=16000, return_tensors="np").input_features)
        ref = hf_whisper_states(ref_encoder, mel)
        ours = teacher(torch.from_numpy(audio))
        short = teacher(torch.from_numpy(audio[:, :32000]))
    assert ours.shape == ref.shape == (blocks + 1, 1, 1500, dim)
    scale = ref.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert ((ours - ref).abs() / scale).max() < 1e-4
    assert short.shape == (blocks + 1, 1, 100, dim) and torch.isfinite(short).all()


def fake_split_teacher(tmp_path, monkeypatch, payload=(b"part one|", b"part two")):
    """Two fake part packages on sys.path and an OFFLINE_WHISPER entry whose checksum is that of the joined parts."""
    import hashlib
    import sys

    from edge_ser_export import teachers
    for i, data in enumerate(payload, 1):
        pkg = tmp_path / "site" / f"fake_part_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"model.bin.part{i}").write_bytes(data)
    (tmp_path / "site" / "fake_part_2" / "data" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("fake_part_1", "fake_part_2"):
        sys.modules.pop(name, None)
    joined = b"part one|part two"
    monkeypatch.setitem(teachers.OFFLINE_WHISPER, "fake", teachers.OfflineWhisper(
        "x/y", ("fake_part_1", "fake_part_2"), ("data/model.bin.part1", "data/model.bin.part2"),
        hashlib.sha256(joined).hexdigest(), len(joined)))
    monkeypatch.setenv("EDGE_SER_CACHE", str(tmp_path / "cache"))
    return joined


def test_split_teacher_parts_are_joined_once_and_verified(tmp_path, monkeypatch):
    joined = fake_split_teacher(tmp_path, monkeypatch)
    path = offline_whisper_dir("fake")
    assert (path / "model.bin").read_bytes() == joined and (path / "config.json").is_file()
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert offline_whisper_dir("fake") == path and (path / "model.bin").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.bin"]


def test_split_teacher_with_altered_part_is_refused(tmp_path, monkeypatch):
    fake_split_teacher(tmp_path, monkeypatch, payload=(b"part one|", b"part TWO"))
    with pytest.raises(EdgeSerError, match="SHA-256"):
        offline_whisper_dir("fake")
    assert not (tmp_path / "cache" / "fake" / "model.bin").exists()
    assert not list((tmp_path / "cache" / "fake").glob(".*partial"))


def test_unknown_teacher_name_lists_the_offline_ones():
    with pytest.raises(EdgeSerError, match="whisper-tiny.en, whisper-base"):
        load_teacher("whisper-huge")


# ------------------------------------------------------------------------------------- wav2vec 2.0 family
@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_wav2vec2_family_from_local_dir(tmp_path, kind):
    teacher = load_teacher(str(save_tiny(kind, tmp_path)))
    assert (teacher.kind, teacher.n_layers, teacher.dim, teacher.provenance["model_type"]) == ("wav2vec2", 3, 32, kind)
    audio = torch.from_numpy(np.stack([speechlike(8000, 0), speechlike(8000, 1)]))
    with torch.no_grad():
        hidden = teacher(audio)
        norm = (audio - audio.mean(1, keepdim=True)) / torch.sqrt(audio.var(1, unbiased=False, keepdim=True) + 1e-7)
        ref = teacher.encoder.model(norm, output_hidden_states=True).hidden_states
    assert hidden.shape == (3, 2, 398, 32)  # 8000 samples, CNN strides 5 x 4
    torch.testing.assert_close(hidden, torch.stack(ref))


def test_feature_extractor_without_normalisation_is_respected(tmp_path):
    assert load_teacher(str(save_tiny("wav2vec2", tmp_path, do_normalize=False))).encoder.normalize is False


def test_offline_hub_id_names_the_local_directory_alternative(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EdgeSerError, match="local directory"):
        load_teacher("edge-ser-tests/no-such-model")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeSerError, match="not one of whisper-tiny.en, whisper-base, a model directory or a hub id"):
        load_teacher(str(tmp_path / "nowhere" / "model"))


# ------------------------------------------------------------------------------------------------ students
def test_whisper_student_copies_front_end_and_first_blocks():
    teacher = tiny_whisper_teacher()
    student = make_student(teacher, blocks=2)
    assert (student.kind, student.blocks, student.n_layers, student.dim) == ("whisper", 2, 3, 32)
    assert student.provenance["copied_blocks"] == [0, 1]
    audio = torch.from_numpy(speechlike(16000))[None]
    with torch.no_grad():
        t, s = teacher(audio), student(audio)
    assert s.shape == (3, 1, 50, 32)
    torch.testing.assert_close(s[:2], t[:2])  # embedding and block 0 are the teacher's; block 1 ends in ln_post

    narrow = make_student(teacher, blocks=1, width=16)
    assert (narrow.n_layers, narrow.dim, narrow.provenance["copied_blocks"]) == (2, 16, [])
    assert narrow(audio).shape == (2, 1, 50, 16)
    random = make_student(teacher, blocks=2, init="random")
    assert not torch.equal(random.encoder.conv1.weight, teacher.encoder.conv1.weight)


def test_wav2vec2_student_copies_cnn_and_first_layers(tmp_path):
    teacher = load_teacher(str(save_tiny("wavlm", tmp_path)))
    student = make_student(teacher, blocks=1)
    assert (student.kind, student.n_layers, student.dim) == ("wav2vec2", 2, 32)
    assert student.provenance["copied_blocks"] == [0]
    audio = torch.from_numpy(speechlike(8000))[None]
    with torch.no_grad():
        torch.testing.assert_close(student(audio)[:2], teacher(audio)[:2])

    narrow = make_student(teacher, blocks=1, width=16)
    assert (narrow.n_layers, narrow.dim) == (2, 16)
    cnn = "model.feature_extractor.conv_layers.0.conv.weight"
    torch.testing.assert_close(narrow.encoder.state_dict()[cnn], teacher.encoder.state_dict()[cnn])
    assert narrow(audio).shape == (2, 1, 398, 16)
    with pytest.raises(EdgeSerError, match="Student blocks 3"):
        make_student(teacher, blocks=3)


def test_time_stride_halves_the_student_frames(tmp_path):
    whisper = tiny_whisper_teacher()
    wavlm = load_teacher(str(save_tiny("wavlm", tmp_path)))
    audio = torch.from_numpy(speechlike(16000))[None]
    for teacher in (whisper, wavlm):
        student = make_student(teacher, blocks=1, time_stride=2)
        assert student.frame_hop == 2 * teacher.frame_hop
        with torch.no_grad():
            t, s = teacher(audio), student(audio)
        assert s.shape[2] == -(-t.shape[2] // 2)
    # Whisper keeps the teacher's convolutions and the positions of the frames kept
    student = make_student(whisper, blocks=1, time_stride=2)
    torch.testing.assert_close(student.encoder.conv2.weight, whisper.encoder.conv2.weight)
    torch.testing.assert_close(student.encoder.positional_embedding, whisper.encoder.positional_embedding[::2])
    with pytest.raises(EdgeSerError, match="stride"):
        make_student(whisper, blocks=1, time_stride=0)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_ffn_pruning_refits_the_output_layer(tmp_path, family):
    from edge_ser_export.distill import prune_ffn
    from edge_ser_export.teachers import ffn_layers

    teacher = tiny_whisper_teacher() if family == "whisper" else load_teacher(str(save_tiny("wav2vec2", tmp_path)))
    clips = [torch.from_numpy(speechlike(12000, seed=i))[None] for i in range(6)]
    full = make_student(teacher, blocks=1)
    pruned = make_student(teacher, blocks=1)
    prune_ffn(pruned, clips, keep=16)
    (parent, up, down), = ffn_layers(pruned.encoder)
    (full_parent, full_up, full_down), = ffn_layers(full.encoder)
    assert getattr(parent, up).out_features == 16 and getattr(parent, down).in_features == 16
    assert pruned.provenance["ffn"] == [16]
    # the same units, kept by plain slicing (output weights not refitted), reproduce the full block worse
    old, new = getattr(full_parent, full_up).weight, getattr(parent, up).weight
    kept = [int(torch.argmin((old - row).abs().sum(1))) for row in new]
    sliced = make_student(teacher, blocks=1)
    (sp, sup, sdown), = ffn_layers(sliced.encoder)
    with torch.no_grad():
        mask = torch.zeros(getattr(sp, sdown).in_features)
        mask[kept] = 1
        getattr(sp, sdown).weight.mul_(mask)

    def error(model):
        with torch.no_grad():
            return sum(float(((model(c)[-1] - full(c)[-1]) ** 2).mean()) for c in clips)
    assert error(pruned) < error(sliced)


def test_ffn_pruning_refit_is_the_ridge_on_frames_and_weighted_clip_means():
    """prune_ffn's output layer is the ridge regression on every frame plus, as one more row, each clip's mean frame
    weighted by sqrt(PRUNE_CLIP_MEANS x its frames): here solved directly from the uncut block's activations."""
    from edge_ser_export import distill
    from edge_ser_export.teachers import ffn_layers

    clips = [torch.from_numpy(speechlike(8000 + 2000 * i, seed=i))[None] for i in range(6)]   # unequal lengths
    full, pruned = teacher_prefix(tiny_whisper_teacher(), 1), teacher_prefix(tiny_whisper_teacher(), 1)
    (parent, up, down), = ffn_layers(full.encoder)
    seen = {}
    hook = getattr(parent, down).register_forward_hook(lambda m, inputs, output: seen.update(a=inputs[0][0],
                                                                                             d=output[0]))
    rows, targets = [], []
    with torch.no_grad():
        for c in clips:
            full(c)
            a, d = torch.cat([seen["a"], torch.ones(len(seen["a"]), 1)], 1).double(), seen["d"].double()
            w = (distill.PRUNE_CLIP_MEANS * len(a)) ** 0.5
            rows += [a, w * a.mean(0, keepdim=True)]
            targets += [d, w * d.mean(0, keepdim=True)]
    hook.remove()
    distill.prune_ffn(pruned, clips, keep=16)
    (cut, cut_up, cut_down), = ffn_layers(pruned.encoder)
    kept = [int(torch.argmin((getattr(parent, up).weight - row).abs().sum(1))) for row in getattr(cut, cut_up).weight]
    x, y = torch.cat(rows)[:, kept + [-1]], torch.cat(targets)
    gram = x.T @ x
    solution = torch.linalg.solve(gram + 1e-3 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype),
                                  x.T @ y)
    scale = float(solution.abs().max())
    torch.testing.assert_close(getattr(cut, cut_down).weight, solution[:-1].T.float(), rtol=1e-3, atol=1e-4 * scale)
    torch.testing.assert_close(getattr(cut, cut_down).bias, solution[-1].float(), rtol=1e-3, atol=1e-4 * scale)


def test_ffn_pruning_per_block_keeps_the_blocks_past_the_list_whole():
    from edge_ser_export.distill import prune_ffn
    from edge_ser_export.teachers import ffn_layers

    clips = [torch.from_numpy(speechlike(12000, seed=i))[None] for i in range(4)]
    full = make_student(tiny_whisper_teacher(), blocks=2)
    pruned = make_student(tiny_whisper_teacher(), blocks=2)
    assert prune_ffn(pruned, clips, [16]) == [16, 128] == pruned.provenance["ffn"]
    (b0, up0, _), (b1, up1, _) = ffn_layers(pruned.encoder)
    assert (getattr(b0, up0).out_features, getattr(b1, up1).out_features) == (16, 128)
    (f0, fup0, _), (f1, fup1, _) = ffn_layers(full.encoder)
    torch.testing.assert_close(getattr(b1, up1).weight, getattr(f1, fup1).weight)   # block 1 untouched
    assert prune_ffn(make_student(tiny_whisper_teacher(), blocks=2), clips, [0, 999]) == [128, 128]


@pytest.mark.parametrize("family", ["whisper", "wav2vec2", "wav2vec2-stable"])
def test_ffn_pruning_makes_up_for_the_blocks_cut_before(tmp_path, family):
    """Block 1's refit also undoes what cutting block 0 changed in the residual stream: cutting both in one call
    ends closer to the uncut trunk than cutting block 0, then block 1 against that already-cut trunk (the same
    units kept; only the refit's target differs). Post-LN (wav2vec2) and pre-LN blocks alike."""
    from edge_ser_export.distill import prune_ffn

    if family == "whisper":
        teacher = tiny_whisper_teacher()
    else:
        torch.manual_seed(0)
        config = tiny_config("wav2vec2")
        config.do_stable_layer_norm = family.endswith("stable")
        transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
        teacher = load_teacher(str(tmp_path))
    clips = [torch.from_numpy(speechlike(12000, seed=i))[None] for i in range(6)]
    full, together, apart = (make_student(teacher, blocks=2) for _ in range(3))
    prune_ffn(together, clips, [16, 16])
    prune_ffn(apart, clips, [16])
    prune_ffn(apart, clips, [0, 16])

    def error(model):
        with torch.no_grad():
            return sum(float(((model(c)[-1] - full(c)[-1]) ** 2).mean()) for c in clips)
    assert together.provenance["ffn"] == apart.provenance["ffn"] == [16, 16]
    assert error(together) < 0.95 * error(apart)


# ---------------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_matmul_conv_is_the_convolution(stride):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(5, 7, kernel_size=3, stride=stride, padding=1)
    mm = MatMulConv1d(5, 7, kernel_size=3, stride=stride, padding=1)
    mm.load_state_dict(conv.state_dict())
    for n in (1, 2, 9, 200):
        x = torch.randn(2, 5, n)
        torch.testing.assert_close(mm(x), conv(x), atol=1e-5, rtol=1e-5)


def test_int8_whisper_graph_quantizes_the_front_end_convolutions(tmp_path):
    """The log-mel (its DFT's two stages and mel filters: MatMuls) stays float; conv1 and conv2 are MatMuls, so
    dynamic int8 covers them: no Conv is left."""
    onnx = pytest.importorskip("onnx")
    from edge_ser_export import graph
    fp32 = graph.export_onnx(tiny_whisper_teacher(n_layer=1), tmp_path / "t.onnx")
    int8 = graph.quantize_dynamic_onnx(fp32, tmp_path / "q.onnx", signed_weights=True)
    nodes = onnx.load(str(int8)).graph.node
    ops = [n.op_type for n in nodes]
    assert [n.op_type for n in nodes if "log_mel" in n.name and "MatMul" in n.op_type] == ["MatMul"] * 3
    assert "Conv" not in ops and ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger") >= 8


def test_openvino_form_of_the_graph_has_conv_and_the_same_output(tmp_path):
    """OpenVINO's source graph keeps Whisper's convolutions as Conv (faster there); same output as the MatMul form,
    and the model is left as it was."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edge_ser_export import graph
    model = tiny_whisper_teacher(n_layer=1)
    paths = {form: graph.export_onnx(model, tmp_path / f"{form}.onnx", convs_as_matmul=form)
             for form in (True, False)}
    ops = {form: [n.op_type for n in onnx.load(str(p)).graph.node] for form, p in paths.items()}
    assert ops[True].count("Conv") == 0 and ops[False].count("Conv") == 2
    assert all(m.as_matmul for m in model.modules() if isinstance(m, MatMulConv1d))
    model.encoder.conv1.as_matmul = False          # a caller's own setting survives an export
    graph.export_onnx(model, tmp_path / "again.onnx")
    assert not model.encoder.conv1.as_matmul and model.encoder.conv2.as_matmul
    audio = speechlike(16000)[None]
    out = [ort.InferenceSession(str(p)).run(None, {"audio": audio})[0] for p in paths.values()]
    np.testing.assert_allclose(out[0], out[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_onnx_export_variable_length(tmp_path, family):
    ort = pytest.importorskip("onnxruntime")
    teacher = tiny_whisper_teacher(n_layer=2) if family == "whisper" else load_teacher(
        str(save_tiny("wav2vec2", tmp_path / "w2v")))
    path = tmp_path / "teacher.onnx"
    torch.onnx.export(teacher, (torch.from_numpy(speechlike(16000))[None],), str(path), input_names=["audio"],
                      output_names=["hidden"], dynamic_axes={"audio": {0: "batch", 1: "samples"}},
                      opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for audio in (np.stack([speechlike(12800, 1), speechlike(12800, 2)]), speechlike(27200, 3)[None]):
        got = session.run(None, {"audio": audio})[0]
        with torch.no_grad():
            want = teacher(torch.from_numpy(audio)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
