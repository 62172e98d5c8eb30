"""Network debugging (Figure 8) on hand-made arrays, and search, Table 2, debugging and Table 3 end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.apps.debugging import canonical_rows, debug_network, explain_failures
from saywhy.apps.retrieval import evaluate_attribute_retrieval
from saywhy.search import search_images
from saywhy.cli import main
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.metrics.bleu import bleu_by_correctness
from saywhy.render.debug_page import render_debug_html, write_debug_report

# Three classes, one filter each; filter 0 fires on "red crown" images, 1 on "blue wing", 2 on "long tail".
POOLED = np.array([[4.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 4.0, 1.0], [1.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
COUNTS = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])
CLASSES = ["001.Red_Bird", "002.Blue_Bird", "003.Tail_Bird"]
# Images to debug: every filter a little active, so p(t|x,c) = p(t|f_c) for each class c (one-hot head).
SEEN = np.array([[4.0, 1.0, 0.5], [3.0, 0.5, 1.0], [0.5, 4.0, 1.0], [1.0, 3.0, 0.5], [0.5, 0.5, 5.0]])


@pytest.fixture
def explainer() -> Explainer:
    return Explainer(ExplainerConfig.paper(top_k=1, min_df=1)).fit(
        POOLED, sp.csr_matrix(COUNTS), ["red crown", "blue wing", "long tail"], np.eye(3), CLASSES)


def test_canonical_image_is_the_most_confident_labelled_one(explainer):
    pooled = np.array([[2.0, 0.0, 0.0], [5.0, 0.0, 0.0], [9.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # row 2 has the largest class-0 logit but is labelled 1; class 2 has one member
    assert canonical_rows(explainer, pooled, [0, 0, 1, 2]) == {0: 1, 1: 2, 2: 3}


def test_failures_are_explained_both_ways_and_summarized(explainer):
    assert explainer.predict(SEEN).tolist() == [0, 0, 1, 1, 2]
    labels = [1, 1, 1, 0, 2]  # images 0 and 1 are Blue Birds taken for Red Birds, image 3 the other way round
    report = explain_failures(explainer, SEEN, labels, [f"img{i}.jpg" for i in range(5)], list(range(10, 15)),
                              canonical={0: "red.jpg", 2: "tail.jpg"})
    assert report.n_failures == 3 and report.n_images == 5 and report.n_correct == 2
    first = report.failures[0]
    assert (first.image_id, first.path, first.true_class, first.predicted_class) == (10, "img0.jpg", "Blue Bird", "Red Bird")
    assert first.predicted_rationale["sentence"] == "This is a Red Bird because it has red crown."
    assert first.true_rationale["sentence"] == "This is a Blue Bird because it has blue wing."
    # p(t|x,Red) - p(t|x,Blue) = p(t|f0) - p(t|f1): red crown for, blue wing against, long tail 0 (left out)
    assert [t for t, _ in first.misleading] == ["red crown"] and [t for t, _ in first.missed] == ["blue wing"]
    assert first.contrast == ("This is a Red Bird and not a Blue Bird because it has red crown; "
                              "a Blue Bird would have blue wing.")
    assert (first.canonical_true, first.canonical_predicted) == (None, "red.jpg")
    assert report.confused_pairs == [{"true": "Blue Bird", "predicted": "Red Bird", "count": 2},
                                     {"true": "Red Bird", "predicted": "Blue Bird", "count": 1}]
    assert report.misleading_attributes == [("red crown", 2), ("blue wing", 1)]
    assert report.missed_attributes == [("blue wing", 2), ("red crown", 1)]
    assert report.canonical == {"Red Bird": "red.jpg", "Blue Bird": None}


def test_no_failures_says_so(explainer, tmp_path):
    report = explain_failures(explainer, POOLED, [0, 0, 1, 1, 2], [f"img{i}.jpg" for i in range(5)])
    assert report.failures == [] and report.summary() == "no failures: all 5 images are classified as labelled"
    json_path, html_path = write_debug_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["n_failures"] == 0
    assert "no failures" in html_path.read_text() and "<table>" not in html_path.read_text()


def test_page_escapes_text_and_links_images_when_asked(explainer, tmp_path):
    report = explain_failures(explainer, POOLED, [1, 0, 1, 1, 2], ["<b>.jpg", "x.jpg", "y.jpg", "z.jpg", "w.jpg"]).to_dict()
    report["failures"][0]["contrast"] = "<script>alert(1)</script>"
    page = render_debug_html(report, tmp_path / "debug.html", thumbnails=False)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'src="&lt;b&gt;.jpg"' not in page and "&lt;b&gt;.jpg" in page


def test_length_mismatch_is_an_error(explainer):
    with pytest.raises(SaywhyError, match="must match"):
        explain_failures(explainer, POOLED, [0, 1], ["a.jpg"] * 5)


# ----- end to end on a tiny synthbirds with wrong labels -----------------------------------------
@pytest.fixture
def tiny(tiny_noisy_synthbirds) -> dict:
    """96 drawn birds of 4 species, 10% flipped labels, a 1-epoch CNN at 32 px and its explainer."""
    return tiny_noisy_synthbirds


def _cli(argv: list[str]) -> int:
    return main(argv)


def test_search_ranks_and_draws_a_contact_sheet(tiny, capsys):
    attribute = tiny["session"].explainer.vocabulary_[0]
    images = tiny["root"] / "CUB_200_2011" / "images"
    sheet = tiny["base"] / "sheet.png"
    assert _cli(["--quiet", "search", "-a", attribute, "--images", str(images), "--top", "5", "--out", str(sheet),
                 "--explainer", str(tiny["exp"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"query: {attribute};") and "of 96 images" in lines[0]
    assert tiny["session"].explainer.config.retrieval_score == "image"  # ranked by p(t|x), and it says so
    assert "ranked by the sum of log p(t|x) over the attributes" in lines[0]
    hits = lines[1:6]
    assert [int(line.split()[0]) for line in hits] == [1, 2, 3, 4, 5]
    # each hit shows the attribute's calibrated p(t|x) as a percentage (the ranking is by log p(t|x,c))
    assert all(f"{attribute} " in line and "%" in line.split(attribute)[1].split()[0] for line in hits)
    assert sheet.is_file() and sheet.stat().st_size > 0


def test_search_json_agrees_with_the_set_decision(tiny, capsys):
    session = tiny["session"]
    attribute = session.explainer.vocabulary_[1]
    test = tiny["dataset"].split(train=False)
    result = search_images(session, test, [attribute], top=None)
    assert len(result.hits) == len(test) == result.n_images
    explained = [attribute in [t for t, _ in e.attributes] for e in session.explain([h.path for h in result.hits])]
    assert [h.in_explanation for h in result.hits] == explained
    assert result.n_in_explanation == sum(explained)


def test_search_unknown_attribute_is_one_line_with_close_matches(tiny, capsys):
    attribute = tiny["session"].explainer.vocabulary_[0]
    assert _cli(["search", "-a", attribute[:-1] + "x", "--images", str(tiny["root"]), "--explainer", str(tiny["exp"])]) == 1
    err = capsys.readouterr().err
    assert "closest" in err and attribute in err and err.count("\n") == 1


def test_table2_and_table3_on_the_test_images(tiny):
    session, dataset = tiny["session"], tiny["dataset"]
    test = dataset.split(train=False)
    test[0] = replace(test[0], captions=None)  # an image without captions is skipped and counted, not scored
    acts = session.activations(test)
    with_captions = [r for r in test if r.captions is not None]
    parsed = iter(tiny["extractor"].extract_documents([list(r.captions) for r in with_captions]))
    documents = [next(parsed) if r.captions is not None else None for r in test]
    evaluation = evaluate_attribute_retrieval(session.explainer, acts.pooled, documents, n_attributes=50, k=10)
    report = evaluation.report
    assert evaluation.skipped["images without captions"] == 1 and report.n_images == len(test) - 1
    assert 0 < len(report.attributes) <= 50
    for who in (report.method, report.random):
        counts = who.counts
        assert all(sum(c) == report.n_images for c in zip(*counts.values()))
        assert 0.0 <= who.macro["recall"] <= 1.0 and 0.0 <= who.macro["average_precision"] <= 1.0
    assert report.random.counts["tp"][0] + report.random.counts["fp"][0] == \
        report.method.counts["tp"][0] + report.method.counts["fp"][0]

    predicted = session.explainer.predict(acts.pooled)
    labels = np.array([dataset.class_index(r.class_id) for r in test])
    sentences = [e.sentence for e in session.explainer.explain(acts.pooled)]
    table = bleu_by_correctness(sentences, [r.captions for r in test], predicted == labels)
    assert table.skipped == {"images without captions": 1}
    assert table.counts["correct"] + table.counts["wrong"] == table.counts["overall"] == len(test) - 1
    assert all(0.0 <= v <= 1.0 for v in table.means["overall"].values())


def test_debug_explains_every_misclassified_test_image(tiny):
    session, dataset = tiny["session"], tiny["dataset"]
    test = dataset.split(train=False)
    report = debug_network(session, dataset)
    acts = session.activations(test)
    labels = np.array([dataset.class_index(r.class_id) for r in test])
    wrong = np.flatnonzero(acts.logits.argmax(1) != labels)  # the network's own decision, not the explainer's
    assert report.n_failures == len(wrong) > 0  # 1 epoch and 10% flipped labels: there are failures
    assert [f.path for f in report.failures] == [str(test[i].path) for i in wrong]
    train_paths = {str(r.path): dataset.class_index(r.class_id) for r in dataset.split(train=True)}
    for failure in report.failures:
        assert failure.true_index == labels[test.index(next(r for r in test if str(r.path) == failure.path))]
        assert failure.predicted_rationale["class_name"] == failure.predicted_class
        assert failure.true_rationale["sentence"].startswith("This is a")
        assert failure.true_class in failure.true_rationale["sentence"]
        assert train_paths[failure.canonical_true] == failure.true_index
        assert train_paths[failure.canonical_predicted] == failure.predicted_index
    assert sum(p["count"] for p in report.confused_pairs) == report.n_failures


def test_debug_command_writes_json_and_html(tiny, capsys):
    out = tiny["base"] / "debug"
    assert _cli(["--quiet", "debug", "--root", str(tiny["root"]), "--out", str(out), "--explainer", str(tiny["exp"])]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "debug.json").read_text())
    page = (out / "debug.html").read_text()
    assert printed.startswith(f"{data['n_failures']} failure") and f"among {data['n_images']} images" in printed
    assert data["n_failures"] == len(data["failures"]) > 0
    assert page.count("data:image/jpeg;base64,") >= data["n_failures"]
    assert data["failures"][0]["true_rationale"]["sentence"] in page
