"""Every long run ends with what it skipped, and ``--strict`` makes any of it an error before any output (issue 10, item 4)."""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest
from conftest import write_tiny_cub

from saywhy.cli import main
from saywhy.cli.common import skip_summary, strict_check
from saywhy.data.cub import read_cub
from saywhy.errors import SaywhyError


def _damage_line(cub: Path, name: str, line: str) -> None:
    path = cub / name
    path.write_text(path.read_text() + line)


# one of every kind a dataset can skip: (damage, the words of its reason in the summary)
DAMAGES = {
    "malformed line": (lambda cub, root: _damage_line(cub, "images.txt", "x\n"), "malformed line in images.txt"),
    "duplicate image": (lambda cub, root: _damage_line(cub, "images.txt", "1 007.Blue_Bird/b_1.jpg\n"), "duplicate id in images.txt"),
    "duplicate label": (lambda cub, root: _damage_line(cub, "image_class_labels.txt", "1 7\n"), "duplicate id in image_class_labels.txt"),
    "duplicate split": (lambda cub, root: _damage_line(cub, "train_test_split.txt", "1 0\n"), "duplicate id in train_test_split.txt"),
    "duplicate box": (lambda cub, root: _damage_line(cub, "bounding_boxes.txt", "1 1 1 4 4\n"), "duplicate id in bounding_boxes.txt"),
    "duplicate part": (lambda cub, root: _damage_line(cub, "parts/part_locs.txt", "1 1 3 3 1\n"), "duplicate (image, part) in part_locs.txt"),
    "not UTF-8 line": (lambda cub, root: (cub / "classes.txt").write_bytes((cub / "classes.txt").read_bytes() + b"9 caf\xe9\n"),
                       "line not UTF-8 in classes.txt"),
    "caption not UTF-8": (lambda cub, root: (root / "text_c10" / "003.Red_Bird" / "a_1.txt").write_bytes(b"a ros\xe9 crown\n"),
                          "caption file not UTF-8"),
    "image missing": (lambda cub, root: (cub / "images" / "003.Red_Bird" / "a_2.jpg").unlink(), "image file missing"),
    "no label": (lambda cub, root: _damage_line(cub, "images.txt", "9 003.Red_Bird/a_9.jpg\n"), "no class label"),
    "unreadable image": (lambda cub, root: (cub / "images" / "003.Red_Bird" / "a_2.jpg").write_bytes(b"\xff\xd8 not a jpeg"),
                         "unreadable images"),
    "box off the image": (lambda cub, root: (cub / "bounding_boxes.txt").write_text(
        "1 500 500 10 10\n2 2 3 20 18\n3 2 3 20 18\n4 2 3 20 18\n"), "unreadable images"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_strict_refuses_every_kind_of_skip_and_the_summary_counts_it(tmp_path, kind, capsys):
    root = write_tiny_cub(tmp_path)
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("".join(f"{i} 2.0 3.0 20.0 18.0\n" for i in range(1, 5)))
    (root / "text_c10" / "007.Blue_Bird" / "b_2.txt").write_text("a blue bird.\n")  # no skip unless damaged
    damage, reason = DAMAGES[kind]
    assert read_cub(root).skipped == {}  # clean before the damage
    damage(root / "CUB_200_2011", root)
    dataset = read_cub(root)
    strict_check(argparse.Namespace(strict=False), dataset, "bbox")  # nothing happens without --strict
    with pytest.raises(SaywhyError, match="^--strict: 1 " + re.escape(reason)):
        strict_check(argparse.Namespace(strict=True), dataset, "bbox")
    if reason != "unreadable images":
        skip_summary(argparse.Namespace(strict=False), dataset.skipped, dataset.examples)
        assert capsys.readouterr().err.startswith(f"saywhy: skipped: 1 {reason}")


def test_the_summary_names_the_first_file_of_a_reason(capsys):
    skip_summary(argparse.Namespace(), {"caption file not UTF-8": 2, "unreadable images": 0}, {"caption file not UTF-8": "t/a.txt"})
    assert capsys.readouterr().err == "saywhy: skipped: 2 caption file not UTF-8 (first: t/a.txt)\n"
    skip_summary(argparse.Namespace(), {"unreadable images": 0})
    assert capsys.readouterr().err == "saywhy: skipped: nothing\n"


@pytest.fixture
def damaged(tiny_noisy_synthbirds, tmp_path) -> dict:
    """A copy of the tiny synthbirds with one caption file in Latin-1, one truncated image, one duplicate box line."""
    root = shutil.copytree(tiny_noisy_synthbirds["root"], tmp_path / "birds")
    cub = root / "CUB_200_2011"
    caption = sorted((root / "text_c10").rglob("*.txt"))[0]
    caption.write_bytes(caption.read_text().replace("a", "\xe0", 1).encode("latin-1"))
    image = root / tiny_noisy_synthbirds["dataset"].split(train=True)[-1].path.relative_to(tiny_noisy_synthbirds["root"])
    image.write_bytes(image.read_bytes()[:40])
    _damage_line(cub, "bounding_boxes.txt", "1 0 0 5 5\n")
    home = shutil.copytree(tiny_noisy_synthbirds["home"], tmp_path / "home")
    return {"root": root, "home": home, "caption": caption, "ckpt": tiny_noisy_synthbirds["ckpt"],
            "exp": tiny_noisy_synthbirds["exp"]}


def test_fit_ends_with_everything_skipped_and_strict_writes_nothing(damaged, tmp_path, capsys):
    fit = ["--home", str(damaged["home"]), "fit", "--model", str(damaged["ckpt"]), "--root", str(damaged["root"]),
           "--min-df", "1"]
    assert main(fit + ["--out", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saywhy: error: --strict: "), err
    assert "caption file not UTF-8" in err[0] and str(damaged["caption"]) in err[0] and "bounding_boxes.txt" in err[0]
    assert not (tmp_path / "strict").exists()
    assert main(fit + ["--out", str(tmp_path / "exp")]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("saywhy: skipped: ") and str(damaged["caption"]) in last
    assert "1 unreadable images" in last and "1 duplicate id in bounding_boxes.txt" in last
    assert (tmp_path / "exp" / "explainer.json").is_file()


def test_train_and_evaluate_strict_refuse_before_any_work(damaged, tmp_path, capsys):
    home = ["--home", str(damaged["home"])]
    assert main(home + ["train", "--root", str(damaged["root"]), "--epochs", "1", "--out", str(tmp_path / "ckpt"), "--strict"]) == 1
    assert "--strict: " in capsys.readouterr().err and not (tmp_path / "ckpt").exists()
    assert main(home + ["evaluate", "--root", str(damaged["root"]), "--explainer", str(damaged["exp"]),
                        "--out", str(tmp_path / "results"), "--strict"]) == 1
    assert "--strict: " in capsys.readouterr().err and not (tmp_path / "results").exists()


def test_train_ends_with_the_unreadable_images_it_skipped(damaged, tmp_path, capsys):
    assert main(["--home", str(damaged["home"]), "train", "--root", str(damaged["root"]), "--epochs", "1",
                 "--image-size", "16", "--out", str(tmp_path / "ckpt")]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("saywhy: skipped: ") and "1 unreadable images" in last


def test_train_with_no_test_images_trains_and_says_n_a(tmp_path, capsys):
    root = write_tiny_cub(tmp_path)
    split = root / "CUB_200_2011" / "train_test_split.txt"
    split.write_text("".join(f"{i} 1\n" for i in range(1, 5)))
    assert main(["--home", str(tmp_path / "home"), "train", "--root", str(root), "--epochs", "1", "--image-size", "16",
                 "--out", str(tmp_path / "ckpt")]) == 0
    assert "test accuracy n/a on 0 images" in capsys.readouterr().out
