"""How many cases the property tests (hypothesis) generate: a few hundred in ``make test`` (the
``test`` profile), thousands in ``benchmarks/robustness.py`` (``SAYWHY_FUZZ=robustness``).

``examples(share)`` is the settings of one test: the profile's count times ``share``, so a
test that parses captions with spaCy can ask for fewer than one of pure array code.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                       HealthCheck.data_too_large, HealthCheck.filter_too_much],
           "print_blob": True}
settings.register_profile("test", max_examples=40, **_COMMON)
settings.register_profile("robustness", max_examples=1000, **_COMMON)
PROFILE = os.environ.get("SAYWHY_FUZZ", "test")


def examples(share: float = 1.0) -> settings:
    """The settings for one property test: ``share`` of the profile's ``max_examples`` (at least 5)."""
    profile = settings.get_profile(PROFILE)
    return settings(profile, max_examples=max(5, int(profile.max_examples * share)))


def attached_or_one_line(dataset, path):
    """``dataset`` with the attribute file at ``path`` attached, or None when it is refused, which must
    be in one line (the documented error of the attribute-file readers)."""
    from saywhy.data.attribute_files import attach_attribute_file
    from saywhy.errors import SaywhyError

    try:
        return attach_attribute_file(dataset, path)
    except SaywhyError as error:
        assert "\n" not in str(error)
        return None
