"""The bundle on disk: read it safely, write it atomically, slim it to one variant.

A bundle is a directory holding ``edge-ser.json`` (:mod:`edge_ser.manifest`), ``MODEL_CARD.md`` and the model
files the manifest lists with their SHA-256. It is untrusted input: a file it names must be a plain name in
the bundle directory (no path, no symlink), and the bytes an engine runs are the bytes that were checked
(:meth:`Bundle.read`), so a file swapped after the check is never run.

Writing never destroys what it did not make: :func:`atomic_directory` builds the bundle in a hidden sibling
folder and moves it into place at the end; it replaces only an existing *bundle* (a folder holding nothing but
a manifest, a model card and the files that manifest lists), never the working directory or a folder above it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import BundleError, EdgeSerError
from .interrupt import on_termination
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, MODEL_CARD, FileEntry, Manifest, Variant

log = logging.getLogger(__name__)
PARTIAL_MARK = ".edge-ser-partial"    # inside a folder that atomic_directory is building


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def variants(self) -> dict[str, Variant]:
        return self.manifest.variants

    @property
    def trained_speakers(self) -> set[str]:
        """The speakers the shipped files learned from (scoring the bundle on them again would be optimistic)."""
        return set(self.manifest.data.trained_speakers) if self.manifest.data else set()

    def variant(self, name: str | None = None) -> tuple[str, Variant]:
        """(name, variant): the named one, or the bundle's default; an unknown name lists the known ones."""
        name = name or self.manifest.default_variant
        if name not in self.variants:
            raise BundleError(f"bundle {self.path} has no variant {name!r}; it has: {', '.join(self.variants)}")
        return name, self.variants[name]

    def read(self, name: str) -> bytes:
        """The bytes of a listed file, checked against its size and SHA-256 (what an engine may run)."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{name} is not listed in {self.path / MANIFEST}")
        data = _read_regular(self.path / name, entry.bytes + 1)
        if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleError(f"bundle file {self.path / name} does not match its size and SHA-256 in {MANIFEST}: "
                              "it was modified or corrupted; re-export the bundle")
        return data

    def size_mb(self, name: str) -> float:
        _, v = self.variant(name)
        return sum(self.manifest.files[f].bytes for f in v.files) / 1e6


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file that is not a symlink (no FIFO, device or link out)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BundleError(f"bundle file {path} is missing; re-export the bundle") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BundleError(f"bundle file {path} is a symbolic link; a bundle must hold its files itself") from None
        raise BundleError(f"cannot read bundle file {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"bundle file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and check a bundle's manifest; with ``verify``, also every file's size and SHA-256."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path} is not an edge-ser bundle: {MANIFEST} is missing "
                          "(make one with `edge-ser export`)")
    text = _read_regular(path / MANIFEST, MAX_MANIFEST_BYTES + 1)
    bundle = Bundle(path, Manifest.from_json(text, str(path / MANIFEST)))
    if verify:
        for name in bundle.manifest.files:
            bundle.read(name)
    return bundle


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bundle(directory: Path, manifest: Manifest) -> Manifest:
    """Checksum every variant file in ``directory``, then write the manifest and its model card there."""
    from .card import model_card

    directory = Path(directory)
    names = sorted({f for v in manifest.variants.values() for f in v.files})
    manifest = replace(manifest, files={n: FileEntry(sha256_file(directory / n), (directory / n).stat().st_size)
                                        for n in names})
    manifest.check()
    (directory / MANIFEST).write_text(manifest.to_json())
    (directory / MODEL_CARD).write_text(model_card(manifest))
    return manifest


# ------------------------------------------------------------------------------------- writing safely
def is_bundle_dir(path: Path) -> bool:
    """True when ``path`` is a folder holding only a manifest, a model card and the files that manifest lists."""
    if path.is_symlink() or not path.is_dir() or not (path / MANIFEST).is_file():
        return False
    try:
        listed = set(load_bundle(path, verify=False).manifest.files)
    except EdgeSerError:
        return False
    return all(p.is_file() and not p.is_symlink() and p.name in listed | {MANIFEST, MODEL_CARD}
               for p in path.iterdir())


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that cannot or must not be written."""
    out = Path(out)
    if out.is_symlink():
        raise EdgeSerError(f"--out {out} is a symbolic link; give a plain folder path")
    if out.exists() and not out.is_dir():
        raise EdgeSerError(f"--out {out} is a file, not a bundle folder; choose another --out")
    if out.is_dir():
        cwd = Path.cwd().resolve()
        if out.resolve() == cwd or out.resolve() in cwd.parents:
            raise EdgeSerError(f"--out {out} is the working directory or a folder above it; choose a new folder")
        if not any(out.iterdir()):
            return   # an empty folder: nothing to lose
        if not is_bundle_dir(out):
            raise EdgeSerError(f"--out {out} exists and holds files that are not an edge-ser bundle; edge-ser "
                               "replaces only bundles: choose a new folder")
        if not overwrite:
            raise EdgeSerError(f"--out {out} already holds a bundle; pass --overwrite to replace it")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeSerError(f"cannot write --out {out}: {parent} is not a writable folder")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> int:
    """Remove hidden ``.NAME.partial-PID-*`` folders that an interrupted write to ``out`` left behind."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.partial-(\d+)-")
    removed = 0
    for p in out.parent.glob(f".{out.name}.partial-*") if out.parent.is_dir() else []:
        m = pattern.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and (p / PARTIAL_MARK).is_file() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished bundle folder(s) left by an interrupted run", removed)
    return removed


def _remove_bundle(path: Path) -> None:
    """Delete a bundle folder file by file (only what ``is_bundle_dir`` allows), then the folder if empty."""
    for p in path.iterdir():
        p.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False):
    """Yield a hidden sibling folder that becomes ``out`` only if the block completes.

    Any exception, Ctrl-C or SIGTERM (see :mod:`.interrupt`) removes the folder, so a failed write leaves
    nothing; a folder left by a killed process (SIGKILL) is removed by the next write to the same ``out``.
    """
    out = Path(out)
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0o22)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)   # mkdtemp makes it private; a bundle is as readable as any file the user writes
    (tmp / PARTIAL_MARK).touch()
    try:
        with on_termination(lambda: shutil.rmtree(tmp, ignore_errors=True)):
            yield tmp
        (tmp / PARTIAL_MARK).unlink()
        check_out(out, overwrite)       # what is at --out may have changed while we worked
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
            os.replace(out, old / "bundle")
        os.replace(tmp, out)
        if old is not None:
            _remove_bundle(old / "bundle")
            with contextlib.suppress(OSError):
                old.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pack(bundle: Bundle | str | os.PathLike, variants: str | list[str], out: str | os.PathLike,
         overwrite: bool = False) -> Manifest:
    """Write a deployment bundle at ``out`` holding only ``variants`` (a name, a comma-separated list or a list)
    of ``bundle``: their checked bytes, a manifest listing only them (the first is the default) and its card."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
    names = [n.strip() for n in variants.split(",")] if isinstance(variants, str) else list(variants)
    kept = dict(bundle.variant(n) for n in names)
    check_out(Path(out), overwrite)
    with atomic_directory(out, overwrite) as tmp:
        for f in {f for v in kept.values() for f in v.files}:
            (tmp / f).write_bytes(bundle.read(f))
        return write_bundle(tmp, replace(bundle.manifest, variants=kept, default_variant=names[0]))
