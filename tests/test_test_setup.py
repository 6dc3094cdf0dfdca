"""The suite's own rules: an optional dependency skips only the tests that need it, and under
CI=true a missing dependency fails instead of skipping."""

import pytest

from conftest import require


def test_missing_dependency_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require("sansa_gpu_no_such_module")


def test_missing_dependency_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ModuleNotFoundError):
        require("sansa_gpu_no_such_module")
    assert require("numpy").__name__ == "numpy"
