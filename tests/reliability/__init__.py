"""Reliability and security: real servers killed and restarted, hostile input, TLS."""
