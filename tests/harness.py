"""Real servers for the tests; filled in by the harness."""
