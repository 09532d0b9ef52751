"""The entry point's own option: the log level."""

from __future__ import annotations

import pytest

from runpod_handler import log_level


def test_log_level_accepts_any_case():
    assert log_level(" debug ") == "DEBUG"


def test_unknown_log_level_names_the_variable():
    with pytest.raises(SystemExit, match="SCAIL_LOG_LEVEL='loud' must be"):
        log_level("loud")
