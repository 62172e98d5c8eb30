"""End to end through the command line on a tiny synthbirds: real outputs, one-line errors.

The explainer and checkpoint of ``tiny_noisy_synthbirds`` (conftest.py, built once per
session) serve the read-only commands; one ``train`` + ``fit`` through the CLI on the
same birds checks those two commands and the workspace's memory of the last explainer.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from saywhy.cli import main
from saywhy.data.synthbirds import SynthConfig, generate


@pytest.fixture(scope="module")
def tiny(tiny_noisy_synthbirds) -> dict:
    return tiny_noisy_synthbirds


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory) -> dict[str, Path]:
    """``saywhy train`` (1 epoch, 32 px) and ``saywhy fit`` on the tiny birds, in a workspace of their own.

    The paper's p(t|f) (``--attribute-model cooccurrence``) keeps the fit to a second; the
    default evidence model is fitted by ``tiny_noisy_synthbirds``.
    """
    base = tmp_path_factory.mktemp("cli")
    home = base / "home"
    shutil.copytree(tiny["home"], home)  # the captions are parsed already
    ckpt, exp = base / "ckpt", base / "exp"
    assert main(["--quiet", "--home", str(home), "train", "--root", str(tiny["root"]), "--out", str(ckpt),
                 "--epochs", "1", "--image-size", "32"]) == 0
    assert main(["--quiet", "--home", str(home), "fit", "--model", str(ckpt), "--root", str(tiny["root"]),
                 "--out", str(exp), "--min-df", "1", "--attribute-model", "cooccurrence"]) == 0
    return {"base": base, "home": home, "root": tiny["root"], "ckpt": ckpt, "exp": exp}


def _test_image(root: Path) -> Path:
    return next((root / "CUB_200_2011" / "images").rglob("*.jpg"))


def test_explain_prints_a_sentence_and_attributes(tiny, capsys):
    image = _test_image(tiny["root"])
    assert main(["explain", str(image), "--explainer", str(tiny["exp"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{image}: This is a")
    assert " because it has " in out[0]
    assert len(out[1].split(",")) == 5  # top-5 attributes with their evidence


def test_explain_json_has_attributes_with_probabilities(tiny, capsys):
    image = _test_image(tiny["root"])
    assert main(["explain", str(image), "--json", "--explainer", str(tiny["exp"])]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(image)
    scores = [p for _, p in record["attributes"]]
    # the calibrated p(t|x) of each attribute; the ranking is by the class-weighted evidence
    assert all(0 < p < 1 for p in scores) and record["score_name"].startswith("p(t|x)")
    assert record["evidence"] == sorted(record["evidence"], reverse=True)
    assert 0 < record["probability"] <= 1 and record["logit"] is not None and record["predicted"] is True
    assert record["input"] == str(image) and "heatmaps" not in record


def test_contrast_and_describe(tiny, capsys):
    image = _test_image(tiny["root"])
    assert main(["describe", "--list", "--explainer", str(tiny["exp"])]) == 0
    listed = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()]
    assert [int(i) for i, _ in listed] == [0, 1, 2, 3]  # 0-based, the indices every command accepts
    classes = [name for _, name in listed]
    assert main(["contrast", str(image), "--as", classes[0], "--vs", classes[1], "--explainer", str(tiny["exp"])]) == 0
    by_name = capsys.readouterr().out
    assert by_name.startswith(f"This is a{'n' if classes[0][0] in 'AEIOU' else ''} {classes[0]} and not")
    assert main(["contrast", str(image), "--as", "0", "--vs", "1", "--explainer", str(tiny["exp"])]) == 0
    assert capsys.readouterr().out == by_name  # an index names the same class as its name
    assert main(["describe", classes[2], "--explainer", str(tiny["exp"])]) == 0
    by_name = capsys.readouterr().out
    assert by_name.startswith("The network recognizes")
    assert main(["describe", "2", "--explainer", str(tiny["exp"])]) == 0
    assert capsys.readouterr().out == by_name


def test_train_and_fit_write_a_model_and_an_explainer(fitted):
    assert (fitted["ckpt"] / "model.json").is_file()
    meta = json.loads((fitted["exp"] / "explainer.json").read_text())
    assert meta["vocabulary"] and meta["metadata"]["checkpoint"] == str(fitted["ckpt"].resolve())
    assert meta["config"]["attribute_model"] == "cooccurrence"


def test_explainer_is_remembered_for_later_commands(fitted, capsys):
    image = _test_image(fitted["root"])
    assert main(["--home", str(fitted["home"]), "explain", str(image)]) == 0
    captured = capsys.readouterr()
    assert "because it has" in captured.out
    assert f"saywhy: using explainer {fitted['exp'].resolve()} (the last one fitted" in captured.err


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("saywhy: error: ")
    return err[0]


def test_missing_image_is_one_line(tiny, capsys):
    assert main(["explain", "nope.jpg", "--explainer", str(tiny["exp"])]) == 1
    assert "nope.jpg does not exist" in _error(capsys)


def test_unreadable_image_is_one_line(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(bad), "--explainer", str(tiny["exp"])]) == 1
    assert "cannot be read" in _error(capsys)


def test_unknown_class_is_one_line(tiny, capsys):
    assert main(["describe", "Dodo", "--explainer", str(tiny["exp"])]) == 1
    assert "unknown class 'Dodo'" in _error(capsys)
    assert main(["describe", "4", "--explainer", str(tiny["exp"])]) == 1
    assert "class index 4 is out of range 0..3" in _error(capsys)


def test_empty_vocabulary_is_refused_and_nothing_written(fitted, capsys):
    out = fitted["base"] / "never"
    assert main(["--quiet", "--home", str(fitted["home"]), "fit", "--model", str(fitted["ckpt"]), "--root",
                 str(fitted["root"]), "--out", str(out), "--min-df", "100000"]) == 1
    assert "min_df" in _error(capsys)
    assert not out.exists()


def test_model_with_other_class_count_is_refused(fitted, tmp_path, capsys):
    other = generate(tmp_path / "other", SynthConfig(n_images=30, image_size=32, n_species=3), workers=1, progress=False)
    assert main(["--quiet", "--home", str(fitted["home"]), "fit", "--model", str(fitted["ckpt"]), "--root", str(other),
                 "--out", str(tmp_path / "exp")]) == 1
    assert "the dataset's classes differ from the checkpoint's (3 against 4)" in _error(capsys)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["--home", str(tmp_path / "home"), "fit", "--model", str(tmp_path), "--root", str(tmp_path),
                 "--out", str(tmp_path / "x")]) == 1
    assert "not a saywhy checkpoint" in _error(capsys)


def test_fit_from_an_attribute_file_instead_of_captions(fitted, capsys):
    from saywhy.data.synthbirds import load_truth

    truth = load_truth(fitted["root"])
    table = fitted["base"] / "attributes.csv"
    table.write_text("image,attributes\n" + "".join(
        f"{image_id},{';'.join(info['attributes'])}\n" for image_id, info in truth["images"].items()))
    out = fitted["base"] / "exp_attributes"
    assert main(["--quiet", "--home", str(fitted["home"]), "fit", "--model", str(fitted["ckpt"]), "--root",
                 str(fitted["root"]), "--out", str(out), "--attributes", str(table), "--min-df", "1",
                 "--attribute-model", "cooccurrence"]) == 0
    assert "attributes from" in capsys.readouterr().out
    vocabulary = json.loads((out / "explainer.json").read_text())["vocabulary"]
    assert set(vocabulary) <= {a for info in truth["images"].values() for a in info["attributes"]}
