"""Tests for the Clock Drift Monitor integration."""
