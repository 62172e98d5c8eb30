"""Writing an output folder so that nothing a user owns is lost and nothing is half-written.

:func:`atomic_folder` writes a new folder beside the target and swaps it in:

- it replaces only a folder saywhy wrote, of the same kind (an explainer's files for an
  explainer, a checkpoint's for a checkpoint), or an empty one; never a folder of other
  files, the current or home directory (or one holding them), a link, or a file;
- the swap is one ``renameat2(RENAME_EXCHANGE)`` where the system has it, so readers see
  the old folder or the new one, never none; elsewhere the old folder is renamed aside,
  the new one renamed in, then the old one deleted;
- a kill at any point loses nothing: the next write to the same place puts back an old
  folder left aside and removes partial folders whose writer is gone;
- writers to one folder take turns (an advisory lock beside it), so concurrent runs end
  with one complete result.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from saywhy.errors import SaywhyError

# What saywhy writes in each kind of folder; a folder holding anything else is not replaced.
KINDS = {
    "explainer": ("explainer.json", "explainer.safetensors"),
    "checkpoint": ("model.json", "model.safetensors"),
    "shard": ("shard.json", "features.safetensors", "documents.json"),
}
WRITER_FILE = ".saywhy-writer"  # inside a partial folder: the pid of the process writing it


@contextmanager
def atomic_folder(folder: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``folder``, on error it is removed.

    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_folder(base / "out", "explainer") as tmp:
    ...     _ = (tmp / "explainer.json").write_text("{}")
    >>> (base / "out" / "explainer.json").read_text()
    '{}'
    """
    folder = Path(folder)
    check_replaceable(folder, kind)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder):  # a partial folder is created with its writer's pid, so no one takes it for a leftover
        recover_leftovers(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        (tmp / WRITER_FILE).write_text(str(os.getpid()))
    try:
        yield tmp
        # mkdtemp and some writers (safetensors) create private files; outputs are meant to be shared.
        tmp.chmod(0o755)
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        with _lock(folder):
            (tmp / WRITER_FILE).unlink()  # under the lock: no other writer takes it for a leftover
            check_replaceable(folder, kind)  # again: another writer may have put something there
            _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(folder: Path, kind: str) -> None:
    """Refuse, in one line, to replace anything but a saywhy folder of ``kind`` (or an empty one)."""
    if kind not in KINDS:
        raise SaywhyError(f"unknown output kind {kind!r}: one of {', '.join(KINDS)}")
    refuse = f"refusing to replace {folder}"
    if folder.is_symlink():
        raise SaywhyError(f"{refuse}: it is a link; give a new folder to write the {kind} to")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SaywhyError(f"{refuse}: it is a file, not a folder; give a new folder to write the {kind} to")
    resolved = folder.resolve()
    for keep, name in ((Path.cwd().resolve(), "the current directory"), (Path.home().resolve(), "your home directory")):
        if resolved == keep or resolved in keep.parents:
            raise SaywhyError(f"{refuse}: it is or holds {name}; give a new folder to write the {kind} to")
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return
    mine = set(KINDS[kind])
    if not entries & mine or entries - mine:
        other = next((k for k, files in KINDS.items() if k != kind and entries <= set(files)), None)
        what = f"a saywhy {other}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind}" if other else \
            f"{len(entries - mine)} file(s) saywhy did not write"
        raise SaywhyError(f"{refuse}: it holds {what}; saywhy only replaces a {kind} it wrote: give a new folder")


def recover_leftovers(folder: Path) -> None:
    """Undo what a killed writer of ``folder`` left: put back an old folder renamed aside (when the
    new one never arrived), delete old folders whose replacement did arrive, and partial folders
    whose writer is no longer running."""
    parent, name = folder.parent, folder.name
    for old in sorted(parent.glob(f".{name}.old-*")):
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, folder)  # the kill came between "aside" and "in": the old folder is whole
    for partial in parent.glob(f".{name}.partial-*"):
        writer = partial / WRITER_FILE
        if writer.is_file() and _running(writer.read_text().strip()):
            continue  # another process is writing it right now
        shutil.rmtree(partial, ignore_errors=True)


def _swap_in(new: Path, folder: Path) -> None:
    if folder.exists() and _exchange(new, folder):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
        return
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(folder, old)
    os.rename(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    lock = folder.with_name(f".{folder.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
