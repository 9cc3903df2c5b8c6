"""The Celery app the harness's worker runs; its broker comes from the environment."""

from __future__ import annotations

import os

from celery import Celery

BROKER_ENV = "CLOCK_DRIFT_CELERY_BROKER"

app = Celery("clock_drift_harness", broker=os.environ.get(BROKER_ENV, "memory://"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
)
