"""Fixtures shared by the unit tests: ``serve`` starts a real model server process (see test_serving.py)."""

import contextlib

import pytest

with contextlib.suppress(pytest.skip.Exception):  # onnx or onnxruntime missing: the serving tests skip themselves
    from tests.unit.test_serving import serve  # noqa: F401
