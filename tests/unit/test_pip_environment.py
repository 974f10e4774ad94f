"""A local pipeline run tells pip to stay offline for the run only, and an image build always reaches the index:
the offline setting once outlived a run and made a later image build in the same process find no wheel."""

from __future__ import annotations

import os

import pytest

from mlspec.runtime.local_run import _offline_pip
from mlspec.targets.images import _index_allowed


def test_the_offline_setting_lasts_for_the_run_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    with _offline_pip():
        assert os.environ["PIP_NO_INDEX"] == "1"
    assert "PIP_NO_INDEX" not in os.environ


def test_a_setting_the_caller_made_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    with _offline_pip():
        assert os.environ["PIP_NO_INDEX"] == "0"
    assert os.environ["PIP_NO_INDEX"] == "0"


def test_an_image_build_never_inherits_no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "180")
    environment = _index_allowed()
    assert "PIP_NO_INDEX" not in environment and environment["PIP_DEFAULT_TIMEOUT"] == "180"
