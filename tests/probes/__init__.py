"""Tests of the clock probes, the report and the command line."""
