"""Tests for the backend package."""
