"""The library's three calls on a user's own torchvision model: tensors, PIL images, paths, targets, heatmaps."""
from __future__ import annotations

import numpy as np
import pytest

import saywhy
from saywhy.data.images import Preprocess, open_image

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.fixture(scope="module")
def resnet_session(tiny_noisy_synthbirds, tmp_path_factory):
    import torch
    import torchvision

    import shutil

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("api")
    shutil.copytree(tiny_noisy_synthbirds["home"], base / "home")  # the captions are parsed already
    model = torchvision.models.resnet18(num_classes=4)  # random weights: near chance, and warned about
    session = saywhy.fit(model, tiny_noisy_synthbirds["root"], preprocess=Preprocess(image_size=64, **IMAGENET),
                         arch="torchvision:resnet18", out=str(base / "exp"), home=base / "home", min_df=1)
    test = tiny_noisy_synthbirds["dataset"].split(train=False)[:3]
    return {"session": session, "base": base, "paths": [r.path for r in test]}


def test_fit_on_a_live_model_finds_its_layers_and_warns_near_chance(resnet_session):
    session = resnet_session["session"]
    assert (session.layers.feature_layer, session.layers.head) == ("layer4", "fc")
    assert any("near chance" in w for w in session.fit_report.warnings)
    assert session.explainer.metadata_["warnings"] == session.fit_report.warnings


def test_tensors_pil_images_and_paths_give_the_same_explanations(resnet_session):
    session, paths = resnet_session["session"], resnet_session["paths"]
    pil = [open_image(p) for p in paths]
    import torch

    tensors = torch.stack([session.preprocess(image) for image in pil])
    by_tensor, by_pil, by_path = session(tensors), session(pil), session(paths)
    for a, b, c in zip(by_tensor, by_pil, by_path):
        assert a.sentence == b.sentence == c.sentence
        assert a.class_index == b.class_index == c.class_index
        np.testing.assert_allclose([s for _, s in a.attributes], [s for _, s in c.attributes], rtol=1e-5)
    assert [e.input for e in by_tensor] == ["tensor[0]", "tensor[1]", "tensor[2]"]
    assert [e.input for e in by_path] == [str(p) for p in paths]
    assert session(str(paths[0]))[0].sentence == by_path[0].sentence  # one path is one image, not its characters


def test_targets_as_tensors_names_and_one_for_all(resnet_session):
    import torch

    session, paths = resnet_session["session"], resnet_session["paths"]
    names = [session.explainer.class_names_[i] for i in (2, 0, 1)]
    assert [e.class_index for e in session(paths, target=torch.tensor([2, 0, 1]))] == [2, 0, 1]
    assert [e.class_index for e in session(paths, target=names)] == [2, 0, 1]
    assert [e.class_index for e in session(paths, target=torch.tensor(3))] == [3, 3, 3]
    pooled = session.activations(paths).pooled
    assert [e.class_index for e in session.explainer.explain(pooled, names[0])] == [2, 2, 2]
    with pytest.raises(saywhy.SaywhyError, match="uint8 tensor is not a preprocessed input"):
        session(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert session(torch.zeros(1, 3, 64, 64, dtype=torch.float64))[0].sentence.startswith("This is")


def test_target_per_sample_and_probabilities(resnet_session):
    session, paths = resnet_session["session"], resnet_session["paths"]
    explained = session(paths, target=[0, 1, "2"])
    assert [e.class_index for e in explained] == [0, 1, 2]
    for e in explained:
        assert 0 < e.probability < 1 and len(e.alternatives) == 3
        assert e.probability + sum(p for _, p in e.alternatives) == pytest.approx(1.0)
        assert all(0 <= s < 1 for _, s in e.attributes) and "p(t|x)" in e.score_name
    with pytest.raises(saywhy.SaywhyError, match="2 targets for 3 images"):
        session(paths, target=[0, 1])


def test_heatmaps_at_layer_and_image_resolution(resnet_session):
    session, paths = resnet_session["session"], resnet_session["paths"]
    (explanation,) = session(paths[:1], heatmaps=True)
    maps = explanation.heatmaps
    assert maps.attributes == [t for t, _ in explanation.attributes]
    assert maps.layer.shape == (len(maps.attributes), 2, 2)  # ResNet-18 at 64 px: 2 x 2 maps
    assert maps.image.shape == (len(maps.attributes), 64, 64) and maps.image.max() == pytest.approx(1.0)
    grounded = session.ground(paths[0], maps.attributes[:1])
    np.testing.assert_allclose(grounded.layer[0], maps.layer[0], rtol=1e-6)  # float32 products: the maps' precision
    with pytest.raises(saywhy.SaywhyError, match="not in the explainer's vocabulary"):
        session.ground(paths[0], ["plaid crown"])


def test_search_ranks_images_by_attributes(resnet_session):
    session, paths = resnet_session["session"], resnet_session["paths"]
    attribute = session.explainer.vocabulary_[0]
    hits = session.search([attribute], paths).hits
    assert [h.rank for h in hits] == [1, 2, 3] and sorted(h.path for h in hits) == sorted(map(str, paths))
    assert hits[0].log_score >= hits[1].log_score >= hits[2].log_score and hits[0].log_score <= 0
    calibrated = session.explainer.readable_scores(session.activations(paths).pooled)
    column = session.explainer.vocabulary_.index(attribute)
    assert sorted(h.probabilities[attribute] for h in hits) == pytest.approx(sorted(calibrated[:, column]))
    import torch

    assert session.search([attribute], torch.zeros(2, 3, 64, 64)).hits[0].path in ("tensor[0]", "tensor[1]")


def test_the_explainer_fitted_in_python_works_from_the_command_line(resnet_session, capsys):
    from saywhy.cli import main

    base, paths = resnet_session["base"], resnet_session["paths"]
    loaded = saywhy.load(base / "exp", home=base / "home")
    expected = resnet_session["session"](paths[:1])[0].sentence
    assert loaded(paths[:1])[0].sentence == expected
    assert main(["--home", str(base / "home"), "explain", str(paths[0]), "--explainer", str(base / "exp")]) == 0
    assert expected in capsys.readouterr().out
    # the network lives beside the explainer, so saving the explainer again cannot delete it
    assert loaded.explainer.metadata_["checkpoint"] == str((base / "exp.checkpoint").resolve())
    loaded.explainer.save(base / "exp")
    assert saywhy.load(base / "exp", home=base / "home")(paths[:1])[0].sentence == expected


def test_box_crop_checkpoints_use_the_box_or_say_they_did_not(resnet_session, tiny_noisy_synthbirds):
    from dataclasses import replace

    session, paths = resnet_session["session"], resnet_session["paths"]
    cropping = saywhy.Session(session.explainer, session.model, replace(session.preprocess, crop="bbox"))
    outside = resnet_session["base"] / "outside.png"
    open_image(paths[0]).save(outside)  # a file the dataset does not know: no box for it
    (whole,) = cropping(outside)
    assert whole.notes and "whole image was explained" in whole.notes[0]
    (boxed,) = cropping(outside, box=(4, 4, 40, 40))
    assert boxed.notes == []
    # the box is what the network saw: the same as explaining the cropped image
    cropped = open_image(outside).crop((4, 4, 44, 44))
    assert boxed.logit == pytest.approx(session(cropped)[0].logit, rel=1e-5)
    # an explicit box is applied for a whole-image network too
    assert session(outside, box=(4, 4, 40, 40))[0].logit == pytest.approx(boxed.logit, rel=1e-5)
    # a file of the explainer's dataset gets the dataset's box
    record = tiny_noisy_synthbirds["dataset"].split(train=False)[0]
    (known,) = cropping(record.path)
    assert known.notes == [] and known.logit == pytest.approx(cropping(record.path, box=record.bbox)[0].logit, rel=1e-5)
    with pytest.raises(saywhy.SaywhyError, match="width, height > 0"):
        cropping(outside, box=(4, 4, 0, 40))


def test_a_torchvision_transform_is_accepted_when_explaining(resnet_session):
    from torchvision import transforms

    session, paths = resnet_session["session"], resnet_session["paths"]
    transform = transforms.Compose([transforms.Resize((64, 64)), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET["mean"], IMAGENET["std"])])
    with_transform = saywhy.Session(session.explainer, session.model, transform)
    assert [e.class_index for e in with_transform(paths)] == [e.class_index for e in session(paths)]


# VGG-11 goes through the same find_layers refusal (tests/test_layers.py builds it without its slow init)
@pytest.mark.parametrize("build", ["mlp_head_resnet18", "vgg11"])
def test_networks_the_method_cannot_explain_are_refused_at_fit_in_one_line(tiny_noisy_synthbirds, tmp_path, build):
    import torch
    import torchvision
    from torch import nn

    if build == "vgg11":
        from torchvision.models.vgg import VGG, cfgs, make_layers

        model = VGG(make_layers(cfgs["A"]), num_classes=4, init_weights=False)  # = vgg11(num_classes=4)
    else:
        model = torchvision.models.resnet18()
        model.fc = nn.Sequential(nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 4))
    torch.manual_seed(0)
    with pytest.raises(saywhy.SaywhyError) as refused:
        saywhy.fit(model, tiny_noisy_synthbirds["root"], preprocess=Preprocess(image_size=64, **IMAGENET),
                   home=tmp_path, min_df=1)
    message = str(refused.value)
    assert "\n" not in message and "not a linear function of the average-pooled map" in message
    assert "global-average-pooling + one linear layer" in message


def test_a_dataset_whose_class_names_differ_from_the_checkpoints_is_refused(tiny_noisy_synthbirds):
    from saywhy.pipeline import fit_explainer

    tiny = tiny_noisy_synthbirds
    names = [tiny["dataset"].class_names[c] for c in tiny["dataset"].class_ids]
    renamed = names[:1] + ["099.Dodo"] + names[2:]
    with pytest.raises(saywhy.SaywhyError, match="first difference: .* where the checkpoint has '099.Dodo'"):
        fit_explainer(tiny["dataset"], tiny["session"].model, tiny["session"].preprocess, model_classes=renamed)


def test_an_unreadable_file_among_others_is_skipped_with_a_transform(resnet_session, tmp_path):
    from torchvision import transforms

    session, paths = resnet_session["session"], resnet_session["paths"]
    transform = transforms.Compose([transforms.Resize((48, 48)), transforms.ToTensor()])  # not the saved 64 px
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    explained = saywhy.Session(session.explainer, session.model, transform)([paths[0], bad, paths[1]], strict=False)
    assert [e.input for e in explained] == [str(paths[0]), str(paths[1])]
