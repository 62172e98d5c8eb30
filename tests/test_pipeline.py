"""The pipeline on a tiny CUB tree: fitting, and cached features giving the same answers."""
import numpy as np
import torch

from saywhy.data.cub import read_cub
from saywhy.data.images import Preprocess
from saywhy.explain.explainer import ExplainerConfig
from saywhy.model.feature_cache import FeatureCache
from saywhy.model.smallcnn import SmallCNN
from saywhy.pipeline import ExplainerSession, fit_explainer
from saywhy.text.phrases import PhraseExtractor


def test_cached_features_give_the_same_activations_and_explanations(tiny_cub, tmp_path):
    torch.manual_seed(0)
    dataset, model, preprocess = read_cub(tiny_cub), SmallCNN(n_classes=2).eval(), Preprocess(image_size=16)
    config = ExplainerConfig(min_df=1, sigma_activation="l1")
    extractor = PhraseExtractor(cache_dir=tmp_path / "phrases")
    explainer, report = fit_explainer(dataset, model, preprocess, config, extractor=extractor, progress=False)
    assert report.images_used == 2 and "red crown" in explainer.vocabulary_
    cache = FeatureCache(tmp_path / "features")
    cached_explainer, _ = fit_explainer(dataset, model, preprocess, config, extractor=extractor, progress=False,
                                        feature_cache=cache)
    np.testing.assert_allclose(cached_explainer.filter_attribute_pdf_, explainer.filter_attribute_pdf_, rtol=1e-5)

    records = dataset.records
    plain = ExplainerSession(explainer, model, preprocess).activations(records)
    session = ExplainerSession(explainer, model, preprocess, feature_cache=cache)
    first, second = session.activations(records), session.activations(records)
    np.testing.assert_allclose(first.pooled, plain.pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.logits, plain.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(second.pooled, first.pooled)
    assert [e.sentence for e in session.explain(records)] == [e.sentence for e in explainer.explain(plain.pooled)]


def test_sessions_sharing_a_map_memo_run_the_network_once(tiny_noisy_synthbirds, monkeypatch):
    import saywhy.pipeline as pipeline

    shared = tiny_noisy_synthbirds["session"]
    records = tiny_noisy_synthbirds["dataset"].split(train=False)[:3]
    calls = []
    real = pipeline.extract_activations
    monkeypatch.setattr(pipeline, "extract_activations", lambda *a, **k: calls.append(1) or real(*a, **k))
    memo: dict = {}
    first = ExplainerSession(shared.explainer, shared.model, shared.preprocess, map_memo=memo)
    second = ExplainerSession(shared.explainer, shared.model, shared.preprocess, map_memo=memo)
    maps = first.activations(records, keep_maps=True).maps
    np.testing.assert_array_equal(second.activations(records, keep_maps=True).maps, maps)
    assert len(calls) == 1
    ExplainerSession(shared.explainer, shared.model, shared.preprocess).activations(records, keep_maps=True)
    assert len(calls) == 2  # without a memo every call runs the network


def test_fit_reads_documents_from_the_per_caption_phrases(tiny_noisy_synthbirds):
    """fit_explainer builds each image's document from its per-caption phrases: the same lists as image_documents."""
    from saywhy.pipeline import caption_phrases, image_documents

    records = [r for r in tiny_noisy_synthbirds["dataset"].split(train=True) if r.captions][:20]
    extractor = tiny_noisy_synthbirds["extractor"]
    per_caption = caption_phrases(records, extractor)
    flattened = [[phrase for caption in image for phrase in caption] for image in per_caption]
    assert flattened == image_documents(records, "captions", extractor)
    assert sum(map(len, flattened)) > 20


def test_grad_cam_in_batches_equals_one_backward_pass(tiny_noisy_synthbirds, monkeypatch):
    """Grad-CAM runs GRAD_CAM_BATCH inputs per backward pass (its graph grows with the batch), with the same maps."""
    import torch

    import saywhy.pipeline as pipeline
    from saywhy.data.images import ImageDataset
    from saywhy.model.gradcam import grad_cam_maps

    session, dataset = tiny_noisy_synthbirds["session"], tiny_noisy_synthbirds["dataset"]
    records = dataset.split(train=False)[:5]
    inputs = ImageDataset(records, session.preprocess)
    whole = grad_cam_maps(session.model, session.layers, torch.stack([inputs[i][0] for i in range(5)]), [0, 1, 0, 1, 0])
    monkeypatch.setattr(pipeline, "GRAD_CAM_BATCH", 2)
    batched = session.grad_cam(records, [0, 1, 0, 1, 0])
    assert batched.shape == whole.shape
    np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-6)
