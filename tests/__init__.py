"""Test suite; `tests.support` holds shared helpers and fixtures."""
