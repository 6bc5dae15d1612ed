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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from .errors import BundleError, EdgeSerError
from .head import LinearHead
from .interrupt import on_termination
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, MODEL_CARD, FileEntry, Manifest, Variant

log = logging.getLogger(__name__)
PARTIAL_MARK = ".edge-ser-partial"    # inside a folder that atomic_directory is building


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    manifest_bytes: bytes = field(default=b"", repr=False, compare=False)   # edge-ser.json as read

    @property
    def id(self) -> str:
        """The first 12 hex digits of the SHA-256 of ``edge-ser.json`` (as read): which bundle made a record."""
        return hashlib.sha256(self.manifest_bytes or self.manifest.to_json().encode()).hexdigest()[:12]

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
        """The bytes of a listed file, checked against its size and SHA-256 (what an engine may run).

        A file larger than half this machine's memory is refused before it is read (an engine holds its bytes
        twice while it loads them)."""
        entry, f = self._open(name)
        with f:
            if entry.bytes > _memory_bytes() // 2:
                raise BundleError(f"bundle file {self.path / name} is {entry.bytes / 1e6:.0f} MB, more than this "
                                  f"machine can load ({_memory_bytes() / 1e6:.0f} MB of memory); pick a smaller "
                                  "variant (edge-ser info)")
            try:
                data = f.read(entry.bytes + 1)
            except MemoryError:
                raise BundleError(f"bundle file {self.path / name} ({entry.bytes / 1e6:.0f} MB) does not fit in "
                                  "the memory left; pick a smaller variant (edge-ser info)") from None
        if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise self._mismatch(name)
        return data

    def verify(self, name: str, copy_to: Path | None = None) -> None:
        """Check a listed file against its size and SHA-256 in a stream (memory stays bounded, whatever its
        size); with ``copy_to``, also write the bytes that were checked there."""
        entry, f = self._open(name)
        h, size = hashlib.sha256(), 0
        with f, open(copy_to, "xb") if copy_to else contextlib.nullcontext() as out:
            while size <= entry.bytes and (block := f.read(min(1 << 20, entry.bytes + 1 - size))):
                h.update(block)
                size += len(block)
                if out:
                    out.write(block)
        if size != entry.bytes or h.hexdigest() != entry.sha256:
            raise self._mismatch(name)

    def _open(self, name: str) -> tuple[FileEntry, BinaryIO]:
        """A listed file's entry and the file, opened safely; refused unread when its size is not the listed one."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{name} is not listed in {self.path / MANIFEST}")
        f = os.fdopen(_open_regular(self.path / name), "rb")
        if os.fstat(f.fileno()).st_size != entry.bytes:
            f.close()
            raise self._mismatch(name)
        return entry, f

    def _mismatch(self, name: str) -> BundleError:
        return BundleError(f"bundle file {self.path / name} does not match its size and SHA-256 in {MANIFEST}: "
                           "it was modified or corrupted; re-export the bundle")

    def size_mb(self, name: str) -> float:
        name, _ = self.variant(name)
        return sum(self.manifest.files[f].bytes for f in self.manifest.files_of(name)) / 1e6

    def head(self, variant: str | None = None) -> LinearHead:
        """The checked head a variant's embedding goes through."""
        _, v = self.variant(variant)
        spec = self.manifest.heads[v.head]
        return LinearHead.from_bytes(self.read(spec.file), spec.dim, len(self.labels), str(self.path / spec.file))


def _memory_bytes() -> int:
    """Physical memory of this machine (a large number where unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file that is not a symlink (no FIFO, device or link out)."""
    with os.fdopen(_open_regular(path), "rb") as f:
        return f.read(limit)


def _open_regular(path: Path) -> int:
    """A read-only descriptor of a regular file that is not a symlink (no FIFO, device or link out)."""
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
    return fd


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and check a bundle's manifest; with ``verify``, also every file's size and SHA-256."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path} is not an edge-ser bundle: {MANIFEST} is missing "
                          "(make one with `edge-ser export`)")
    text = _read_regular(path / MANIFEST, MAX_MANIFEST_BYTES + 1)
    bundle = Bundle(path, Manifest.from_json(text, str(path / MANIFEST)), text)
    if verify:
        for name in bundle.manifest.files:
            bundle.verify(name)
    return bundle


def ready_model_path() -> Path:
    """The ready general-purpose model shipped inside the package: what ``Recognizer()`` and the commands load
    when no bundle is given."""
    from importlib import resources

    path = Path(str(resources.files("edge_ser") / "models" / "general"))
    if not (path / MANIFEST).is_file():
        raise BundleError("this edge-ser has no ready model installed; pass a bundle made with `edge-ser export`")
    return path


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
    names = sorted({*(f for v in manifest.variants for f in manifest.files_of(v)), *manifest.shared_files()})
    manifest = replace(manifest, files={n: FileEntry(sha256_file(directory / n), (directory / n).stat().st_size)
                                        for n in names})
    manifest.check_written()
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
    if not names or not all(names):
        raise EdgeSerError(f"variants {variants!r}: an empty variant name; give names separated by commas "
                           "(see `edge-ser info`)")
    kept = dict(bundle.variant(n) for n in names)
    check_out(Path(out), overwrite)
    with atomic_directory(out, overwrite) as tmp:
        heads = {v.head: bundle.manifest.heads[v.head] for v in kept.values()}
        for f in {*(f for name in kept for f in bundle.manifest.files_of(name)), *bundle.manifest.shared_files()}:
            bundle.verify(f, copy_to=tmp / f)
        return write_bundle(tmp, replace(bundle.manifest, variants=kept, heads=heads, default_variant=names[0]))
