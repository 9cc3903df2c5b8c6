"""Tests for the Clock Drift Monitor integration."""

import pytest

# conftest.py imports the harness's types before pytest loads it as a plugin: register
# it first, so its fixtures' asserts are still rewritten.
pytest.register_assert_rewrite("tests.harness")
