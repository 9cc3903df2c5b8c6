"""Tests of the shipped stack: compose, chrony and Celery configs, docs, blueprint."""
