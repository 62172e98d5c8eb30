"""Output folders: nothing a user owns is replaced, and a kill at any step loses nothing."""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from saywhy import files
from saywhy.errors import SaywhyError
from saywhy.files import atomic_folder, recover_leftovers


def _write(folder, text="new", kind="explainer"):
    with atomic_folder(folder, kind) as tmp:
        for name in files.KINDS[kind]:
            (tmp / name).write_text(text)
    return folder


def test_a_folder_of_the_users_files_survives(tmp_path):
    mine = tmp_path / "holiday"
    mine.mkdir()
    (mine / "photo.jpg").write_text("precious")
    with pytest.raises(SaywhyError, match="holds 1 file.s. saywhy did not write"):
        _write(mine)
    assert (mine / "photo.jpg").read_text() == "precious" and sorted(p.name for p in mine.iterdir()) == ["photo.jpg"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_an_explainer_replaces_an_explainer_but_never_a_checkpoint(tmp_path):
    _write(tmp_path / "exp", "old")
    _write(tmp_path / "exp", "new")
    assert (tmp_path / "exp" / "explainer.json").read_text() == "new"
    _write(tmp_path / "ckpt", kind="checkpoint")
    with pytest.raises(SaywhyError, match="it holds a saywhy checkpoint, not an explainer"):
        _write(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.json").is_file()
    with pytest.raises(SaywhyError, match="a file saywhy did not write|file.s. saywhy did not write"):
        (tmp_path / "exp" / "notes.txt").write_text("mine")
        _write(tmp_path / "exp")


def test_the_current_and_home_directories_are_never_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "explainer.json").write_text("{}")
    with pytest.raises(SaywhyError, match="the current directory"):
        _write(tmp_path)
    with pytest.raises(SaywhyError, match="the current directory"):
        _write(tmp_path.parent)  # a folder holding it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(SaywhyError, match="your home directory"):
        _write(tmp_path / "home")


def test_a_file_or_a_link_is_not_replaced(tmp_path):
    (tmp_path / "f").write_text("data")
    with pytest.raises(SaywhyError, match="it is a file"):
        _write(tmp_path / "f")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SaywhyError, match="it is a link"):
        _write(tmp_path / "link")


def test_an_error_while_writing_leaves_the_old_folder_and_no_partial_one(tmp_path):
    _write(tmp_path / "exp", "old")
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "exp", "explainer") as tmp:
            (tmp / "explainer.json").write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "exp" / "explainer.json").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


class Killed(BaseException):
    """A kill: nothing after it runs, not even the cleanup (the handlers are bypassed below)."""


@pytest.mark.parametrize("step", ["aside", "in"])
def test_a_kill_at_each_step_of_the_fallback_swap_loses_nothing(tmp_path, monkeypatch, step):
    """Without renameat2: old aside, new in, old deleted. Kill at each rename, then write again."""
    _write(tmp_path / "exp", "old")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    monkeypatch.setattr(files.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if (step == "aside" and len(calls) == 1) or (step == "in" and len(calls) == 2):
            raise Killed
        real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(Killed):
        _write(tmp_path / "exp", "new")
    monkeypatch.undo()
    # after the kill, the old explainer is there, or aside where the next write puts it back
    recover_leftovers(tmp_path / "exp")
    assert (tmp_path / "exp" / "explainer.json").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    assert _write(tmp_path / "exp", "new") and (tmp_path / "exp" / "explainer.json").read_text() == "new"


def test_a_partial_folder_of_a_running_writer_is_kept(tmp_path):
    live = tmp_path / ".exp.partial-live"
    live.mkdir()
    (live / files.WRITER_FILE).write_text(str(os.getpid()))
    dead = tmp_path / ".exp.partial-dead"
    dead.mkdir()
    (dead / files.WRITER_FILE).write_text("999999999")
    recover_leftovers(tmp_path / "exp")
    assert live.is_dir() and not dead.exists()


def _writer(folder, n, marker):
    for i in range(n):
        with atomic_folder(folder, "explainer") as tmp:
            (tmp / "explainer.json").write_text(json.dumps({"writer": marker, "i": i}))
            (tmp / "explainer.safetensors").write_text(marker * 1000)


def test_concurrent_writers_end_with_one_complete_result(tmp_path):
    folder = tmp_path / "exp"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(folder, 15, m)) for m in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    meta = json.loads((folder / "explainer.json").read_text())
    assert (folder / "explainer.safetensors").read_text() == meta["writer"] * 1000  # both files from one write
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p != folder]
