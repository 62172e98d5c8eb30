"""Property tests (hypothesis) over what users hand saywhy: CUB-layout folders with damaged lines,
text files in any bytes, captions of any characters, attribute files of any shape, and the core
equations on random shapes, empty inputs and non-finite numbers. Each ends in its documented
result or one SaywhyError line, never a crash, a replacement character or a non-finite number.
Counts: ``tests/fuzz.py`` (a few dozen each here, thousands in ``benchmarks/robustness.py``).
"""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import scipy.sparse as sp
from fuzz import attached_or_one_line, examples
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from saywhy.errors import SaywhyError

METADATA = ["images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
            "parts/parts.txt", "parts/part_locs.txt"]
# lines as people damage them: numbers, words, tabs, stray bytes of other encodings, BOMs, NULs
fields = st.one_of(st.integers(-2, 6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["003.Red_Bird", "007.Blue_Bird/b_1.jpg", "003.Red_Bird/a_1.jpg", "nan", "-inf",
                                    "1e309", "", "\t"]),
                   st.text(max_size=8))
line_bytes = st.one_of(st.lists(fields, max_size=6).map(lambda f: " ".join(f).encode("utf-8", "surrogatepass")),
                       st.binary(max_size=24))


@pytest.fixture(scope="module")
def cub_folder(tmp_path_factory):
    """One tiny CUB folder for every generated case; each case restores the file it damaged."""
    from conftest import write_tiny_cub

    return write_tiny_cub(tmp_path_factory.mktemp("cub"))


@examples(1.0)
@given(st.sampled_from(METADATA), st.lists(line_bytes, max_size=8), st.booleans())
def test_the_cub_reader_takes_any_damaged_metadata_file(cub_folder, name, lines, append):
    from saywhy.data.cub import read_cub

    path = cub_folder / "CUB_200_2011" / name
    original = path.read_bytes()
    path.write_bytes((original if append else b"") + b"\n".join(lines) + b"\n")
    try:
        dataset = read_cub(cub_folder)
    except SaywhyError as error:
        assert "\n" not in str(error)
        return
    finally:
        path.write_bytes(original)
    assert dataset.records and all(r.path.is_file() for r in dataset.records)
    assert all(isinstance(n, int) and n > 0 for n in dataset.skipped.values())
    for record in dataset.records:
        assert record.class_id in dataset.class_names
        assert record.bbox is None or len(record.bbox) == 4
        assert all(isinstance(k.x, float) for k in record.keypoints.values())
        assert record.captions is None or all(c and "\ufffd" not in c for c in record.captions)


@examples(2.0)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.tuples(st.sampled_from(["utf-8-sig", "utf-16", "utf-32", "utf-16-le", "latin-1", "cp1252"]),
                           st.text(max_size=30)).map(lambda p: p[1].encode(p[0], "replace"))))
def test_text_files_decode_faithfully_or_are_refused(data):
    from saywhy.data.text_files import NotUTF8Error, decode_text

    try:
        text = decode_text(data, "f.txt")
    except NotUTF8Error as error:
        assert "\n" not in str(error) and "f.txt" in str(error)
        return
    assert "\x00" not in text and "\ufeff" != text[:1]
    # what was decoded is what the bytes say: no replacement was made
    assert any(text.encode(enc, "surrogatepass") == data.removeprefix(bom) or text.encode(enc) == data
               for enc, bom in (("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""), ("utf-32", b"")))


@pytest.fixture(scope="module")
def extractor():
    """One spaCy pipeline for every generated caption (loading it costs seconds); a low ``max_chars``
    so that the over-long path is tried without generating megabytes."""
    from saywhy.text.phrases import PhraseExtractor

    return PhraseExtractor(max_chars=300)


captions = st.one_of(
    st.text(max_size=60),  # any unicode: control characters, surrogates, combining marks, emoji
    st.text(alphabet=st.characters(codec="ascii"), max_size=80),
    st.lists(st.sampled_from(["a", "small", "red", "crown", "bird", "with", "and", ",", ".", "black", "wings",
                              "the", "has", "tan", "orange", "beak", "\n", "\t", "\x00", "  "]), max_size=25).map(" ".join),
    st.integers(301, 2000).map(lambda n: ("red crown " * n)[:n]),  # over max_chars: not parsed
    st.just(""),
)


@examples(0.5)
@given(st.lists(captions, max_size=4))
def test_the_caption_parser_returns_phrases_for_any_text(extractor, texts):
    before = sum(extractor.skipped.values())
    result = extractor.extract(texts)
    assert len(result) == len(texts)
    for text, phrases in zip(texts, result):
        assert isinstance(phrases, list) and all(isinstance(p, str) and " " in p.strip() for p in phrases)
        if len(text) > extractor.max_chars:
            assert phrases == []
    too_long = len({t.lower() for t in texts if len(t) > extractor.max_chars})
    assert sum(extractor.skipped.values()) - before == too_long


def test_a_caption_over_the_limit_gives_no_phrases_is_counted_and_spares_the_others():
    from saywhy.text.phrases import MAX_CAPTION_CHARS, PhraseExtractor

    extractor = PhraseExtractor()
    huge = "a bird with a red crown. " * (1_000_001 // 25 + 1)  # over spaCy's own 1,000,000 too
    assert len(huge) > 1_000_000 > MAX_CAPTION_CHARS
    assert extractor.extract([huge, "a bird with a red crown."]) == [[], ["red crown"]]
    assert extractor.skipped == {f"caption over {MAX_CAPTION_CHARS:,} characters (not parsed)": 1}


cells = st.one_of(st.integers(-3, 9).map(str), st.text(max_size=10), st.sampled_from(["1", "3", "a_1.jpg", "003.Red_Bird/a_1.jpg"]))


@examples(1.0)
@given(st.lists(st.lists(cells, max_size=4), max_size=6), st.sampled_from([["image", "attributes"], ["attributes"],
                                                                            ["image", "attributes", "x"], []]),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_the_attribute_file_reader_takes_any_csv(cub_folder, tmp_path_factory, rows, header, encoding):
    from saywhy.data.cub import read_cub

    base = tmp_path_factory.mktemp("attributes")
    dataset = read_cub(cub_folder)
    text = io.StringIO()
    csv.writer(text).writerows([header, *rows] if header else rows)
    path = base / "attributes.csv"
    try:
        path.write_bytes(text.getvalue().encode(encoding))
    except UnicodeEncodeError:  # a lone surrogate cannot be written at all
        return
    attached = attached_or_one_line(dataset, path)
    if attached is None:
        return
    for record in attached.records:
        assert record.attributes is None or all(isinstance(a, str) and a == a.strip().lower() and a for a in record.attributes)


@examples(1.0)
@given(st.lists(st.one_of(st.lists(fields, max_size=5).map(" ".join), st.just("1 1 1 3 0.5")), max_size=8))
def test_the_cub_binary_attribute_reader_takes_any_lines(cub_folder, tmp_path_factory, lines):
    from saywhy.data.attribute_files import attach_cub_binary_attributes
    from saywhy.data.cub import read_cub

    base = tmp_path_factory.mktemp("binary")
    dataset = read_cub(cub_folder)
    labels, names = base / "labels.txt", base / "attributes.txt"
    labels.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    names.write_text("1 has_crown_color::red\n2 has_size::small_(5_-_9_in)\n")
    attached = attach_cub_binary_attributes(dataset, labels, names)
    assert all(r.attributes is None or set(r.attributes) <= {"red crown", "small size"} for r in attached.records)


# ----- the core equations: random shapes (empty ones too) and non-finite numbers -----------------
def shapes(min_rows=0):
    return st.tuples(st.integers(min_rows, 5), st.integers(1, 5))


numbers = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@examples(1.5)
@given(st.sampled_from(["l1", "softmax", "minmax"]), st.data())
def test_eq_5_to_8_are_distributions_for_any_shape(sigma, data):
    from saywhy.core.image_class import class_attribute_pdf, image_class_attribute_pdf

    n_images, n_filters = data.draw(shapes())
    n_attributes, n_classes = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    pooled = data.draw(arrays(np.float64, (n_images, n_filters), elements=st.floats(0, 1e3)))
    weights = data.draw(arrays(np.float64, (n_classes, n_filters), elements=numbers))
    pdf = data.draw(arrays(np.float64, (n_filters, n_attributes), elements=st.floats(0, 1)))
    pdf = pdf / np.maximum(pdf.sum(axis=1, keepdims=True), 1e-300)
    rows = image_class_attribute_pdf(pdf, pooled, weights[np.arange(n_images) % n_classes], sigma)
    assert rows.shape == (n_images, n_attributes) and np.isfinite(rows).all() and (rows >= -1e-12).all()
    assert np.all((rows.sum(axis=1) <= 1 + 1e-9))
    per_class = class_attribute_pdf(pdf, weights, sigma)
    assert per_class.shape == (n_classes, n_attributes) and np.isfinite(per_class).all()


@examples(1.5)
@given(st.data())
def test_eq_9_heatmaps_are_finite_in_0_1_and_the_size_of_the_image(data):
    from saywhy.core.grounding import attribute_scores, normalize_heatmaps, peak_cells, upsample_heatmap

    n_filters, h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    maps = data.draw(arrays(np.float64, (n_filters, h, w), elements=st.floats(0, 1e4)))
    alpha = data.draw(arrays(np.float64, (data.draw(st.integers(0, 3)), n_filters), elements=numbers))
    heat = normalize_heatmaps(attribute_scores(maps, alpha))
    assert heat.shape == (alpha.shape[0], h, w) and np.isfinite(heat).all() and (heat >= 0).all() and (heat <= 1).all()
    if len(heat):
        assert peak_cells(heat).shape == (len(heat), 2)
        size = (data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40)))
        x0, y0 = data.draw(st.integers(-5, 30)), data.draw(st.integers(-5, 30))
        box = (x0, y0, x0 + data.draw(st.integers(1, 30)), y0 + data.draw(st.integers(1, 30)))
        up = upsample_heatmap(heat[0], box, size)
        assert up.shape == (size[1], size[0]) and np.isfinite(up).all()


@examples(1.0)
@given(arrays(np.int64, shapes(), elements=st.integers(0, 4)), st.sampled_from(["tfidf", "uniform", "df"]))
def test_the_attribute_prior_is_a_distribution_or_one_line(counts, kind):
    from saywhy.core.prior import attribute_prior

    try:
        prior = attribute_prior(sp.csr_matrix(counts), kind)
    except SaywhyError as error:
        assert "\n" not in str(error)
        return
    assert prior.shape == (counts.shape[1],) and np.isfinite(prior).all() and np.isclose(prior.sum(), 1.0)


@examples(0.5)
@given(st.data())
def test_the_evidence_model_is_finite_for_any_small_problem(data):
    from saywhy.core.attribute_evidence import fit_attribute_evidence

    n_images, n_filters = data.draw(shapes(min_rows=1))
    pooled = data.draw(arrays(np.float64, (n_images, n_filters), elements=st.floats(0, 1e3)))
    incidence = data.draw(arrays(np.float64, (n_images, data.draw(st.integers(1, 4))), elements=st.sampled_from([0.0, 1.0])))
    model = fit_attribute_evidence(pooled, sp.csr_matrix(incidence), l2=data.draw(st.sampled_from([1e-3, 1.0, 1e3])))
    probability = model.probability(pooled)
    assert np.isfinite(model.weights).all() and np.isfinite(probability).all()
    assert ((probability >= 0) & (probability <= 1)).all()


anything = st.floats(allow_nan=True, allow_infinity=True, width=32)


@examples(0.5)
@given(st.data())
def test_fitting_refuses_non_finite_numbers_in_one_line_and_is_finite_otherwise(data):
    from saywhy.explain.explainer import Explainer, ExplainerConfig

    n_images, n_filters = data.draw(shapes())
    n_attributes, n_classes = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    pooled = data.draw(arrays(np.float64, (n_images, n_filters), elements=st.one_of(st.floats(0, 50), anything)))
    weights = data.draw(arrays(np.float64, (n_classes, n_filters), elements=st.one_of(numbers, anything)))
    counts = sp.csr_matrix(data.draw(arrays(np.int64, (n_images, n_attributes), elements=st.integers(0, 2))))
    config = ExplainerConfig(min_df=1, attribute_model=data.draw(st.sampled_from(["evidence", "cooccurrence"])))
    try:
        explainer = Explainer(config).fit(pooled, counts, [f"red part{i}" for i in range(n_attributes)], weights,
                                          [f"{i:03d}.C" for i in range(n_classes)])
    except SaywhyError as error:
        assert "\n" not in str(error)
        return
    assume(np.isfinite(pooled).all())
    assert np.isfinite(pooled).all() and np.isfinite(weights).all()  # anything else was refused
    for e in explainer.explain(pooled[:2]):
        assert np.isfinite(e.probability) and all(np.isfinite(s) for _, s in e.attributes)
