"""End to end through the command line on a tiny synthbirds: real outputs, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from saywhy.cli import main
from saywhy.data.synthbirds import SynthConfig, generate


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """Tiny synthbirds, a 1-epoch CNN at 32 px and an explainer: built once for this module."""
    base = tmp_path_factory.mktemp("cli")
    root = generate(base / "birds", SynthConfig(n_images=96, image_size=64, n_species=4), workers=1, progress=False)
    ckpt, exp = base / "ckpt", base / "exp"
    assert main(["--quiet", "--home", str(base / "home"), "train", "--root", str(root), "--out", str(ckpt),
                 "--epochs", "1", "--image-size", "32"]) == 0
    assert main(["--quiet", "--home", str(base / "home"), "fit", "--model", str(ckpt), "--root", str(root),
                 "--out", str(exp), "--min-df", "1"]) == 0
    return {"base": base, "root": root, "ckpt": ckpt, "exp": exp}


def _test_image(root: Path) -> Path:
    return next((root / "CUB_200_2011" / "images").rglob("*.jpg"))


def test_explain_prints_a_sentence_and_attributes(fitted, capsys):
    image = _test_image(fitted["root"])
    assert main(["explain", str(image), "--explainer", str(fitted["exp"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{image}: This is a")
    assert " because it has " in out[0]
    assert len(out[1].split(",")) == 5  # top-5 attributes with probabilities


def test_explain_json_has_attributes_with_probabilities(fitted, capsys):
    image = _test_image(fitted["root"])
    assert main(["explain", str(image), "--json", "--explainer", str(fitted["exp"])]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(image)
    probabilities = [p for _, p in record["attributes"]]
    # p(t|x,c) of each attribute (the evidence model's are not one distribution over attributes)
    assert probabilities == sorted(probabilities, reverse=True) and all(0 < p <= 1.0 for p in probabilities)


def test_contrast_and_describe(fitted, capsys):
    image = _test_image(fitted["root"])
    assert main(["describe", "--list", "--explainer", str(fitted["exp"])]) == 0
    classes = [line.split(None, 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert len(classes) == 4
    assert main(["contrast", str(image), "--as", classes[0], "--vs", classes[1], "--explainer", str(fitted["exp"])]) == 0
    assert capsys.readouterr().out.startswith(f"This is a{'n' if classes[0][0] in 'AEIOU' else ''} {classes[0]} and not")
    assert main(["describe", classes[2], "--explainer", str(fitted["exp"])]) == 0
    assert capsys.readouterr().out.startswith("The network recognizes")


def test_explainer_is_remembered_for_later_commands(fitted, capsys):
    image = _test_image(fitted["root"])
    assert main(["--home", str(fitted["base"] / "home"), "explain", str(image)]) == 0
    assert "because it has" in capsys.readouterr().out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_image_is_one_line(fitted, capsys):
    assert main(["explain", "nope.jpg", "--explainer", str(fitted["exp"])]) == 2
    assert "nope.jpg does not exist" in _error(capsys)


def test_unreadable_image_is_one_line(fitted, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(bad), "--explainer", str(fitted["exp"])]) == 2
    assert "cannot be read" in _error(capsys)


def test_unknown_class_is_one_line(fitted, capsys):
    assert main(["describe", "Dodo", "--explainer", str(fitted["exp"])]) == 2
    assert "unknown class 'Dodo'" in _error(capsys)


def test_empty_vocabulary_is_refused_and_nothing_written(fitted, capsys):
    out = fitted["base"] / "never"
    assert main(["--quiet", "fit", "--model", str(fitted["ckpt"]), "--root", str(fitted["root"]), "--out", str(out),
                 "--min-df", "100000"]) == 2
    assert "min_df" in _error(capsys)
    assert not out.exists()


def test_model_with_other_class_count_is_refused(fitted, tmp_path, capsys):
    other = generate(tmp_path / "other", SynthConfig(n_images=30, image_size=64, n_species=3), workers=1, progress=False)
    assert main(["--quiet", "fit", "--model", str(fitted["ckpt"]), "--root", str(other), "--out",
                 str(tmp_path / "exp")]) == 2
    assert "predicts 4 classes but the dataset has 3" in _error(capsys)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["fit", "--model", str(tmp_path), "--root", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a saywhy checkpoint" in _error(capsys)


def test_fit_from_an_attribute_file_instead_of_captions(fitted, capsys):
    from saywhy.data.synthbirds import load_truth

    truth = load_truth(fitted["root"])
    table = fitted["base"] / "attributes.csv"
    table.write_text("image,attributes\n" + "".join(
        f"{image_id},{';'.join(info['attributes'])}\n" for image_id, info in truth["images"].items()))
    out = fitted["base"] / "exp_attributes"
    assert main(["--quiet", "fit", "--model", str(fitted["ckpt"]), "--root", str(fitted["root"]), "--out", str(out),
                 "--attributes", str(table), "--min-df", "1"]) == 0
    assert "attributes from" in capsys.readouterr().out
    vocabulary = json.loads((out / "explainer.json").read_text())["vocabulary"]
    assert set(vocabulary) <= {a for info in truth["images"].values() for a in info["attributes"]}
