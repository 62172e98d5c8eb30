"""Captions to visual attributes: phrase extraction, vocabulary and term counts."""
from __future__ import annotations

from saywhy.text.phrases import EXTRACTOR_VERSION, PhraseExtractor
from saywhy.text.vocabulary import AttributeVocabulary

__all__ = ["EXTRACTOR_VERSION", "AttributeVocabulary", "PhraseExtractor"]
