"""Recommended Celery settings for a stack watched by Clock Drift Monitor.

Load it with ``app.config_from_object("celeryconfig")`` or ``celery --config
celeryconfig``. Every name below is a real Celery setting (the tests check each against
``celery.app.defaults``): Celery silently ignores names it does not know, which is how
``worker_clock_sync_interval = 60`` once "fixed" nothing. There is no setting for the
heartbeat drift warning either: its 16 s threshold (``HEARTBEAT_DRIFT_MAX``) is
hard-coded in ``celery/events/state.py``. The fix for drift is a right clock (chrony),
not a tolerance.
"""

import os

# --- Time -------------------------------------------------------------------------
# Celery keeps every timestamp it sends (ETAs, expiries, event times) in UTC, and
# converts to `timezone` only for crontab schedules and display. The zone is the site's,
# the same as the TZ of the containers.
enable_utc = True
timezone = os.environ.get("TZ") or "Europe/Paris"

# --- Broker -------------------------------------------------------------------------
broker_url = os.environ.get("CELERY_BROKER_URL", "redis://redis:6379/0")
# Keep retrying at start when Redis is not up yet, instead of exiting (and say so: from
# Celery 6 the default of broker_connection_retry no longer covers start-up).
broker_connection_retry_on_startup = True
# With acks_late, a task Redis handed out and never saw acknowledged is given again
# after this many seconds. Redis compares the time the message was taken with the
# clock of the worker that restores it: a worker whose clock is ahead restores others'
# messages early. Keep it well above the longest task, so a few seconds of drift cannot
# matter.
broker_transport_options = {"visibility_timeout": 2 * 3600}

# --- Tasks --------------------------------------------------------------------------
# Time limits are measured on the worker's monotonic clock: drift or a clock step does
# not touch them. Set them from your longest task; the soft limit raises
# SoftTimeLimitExceeded inside the task so it can clean up, the hard limit kills it.
task_soft_time_limit = 55 * 60
task_time_limit = 60 * 60
# Acknowledge after the task has run, so a worker lost in the middle gives the task back
# (tasks must then be safe to run twice), and take one message at a time so that
# nothing waits behind a long task in a busy worker's prefetch buffer.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Retries are not settings: `task_default_retry_delay` and `task_max_retries` do not
# exist (Celery ignores them). Put them on each task that should retry, for example:
#     @app.task(autoretry_for=(ConnectionError,), retry_backoff=True,
#               retry_backoff_max=600, retry_jitter=True, max_retries=5)
# Results are kept one day in Redis, then expire.
result_expires = 24 * 3600

# --- Events and heartbeats ---------------------------------------------------------
# Workers send `worker-heartbeat` every 2 s whatever these say; Clock Drift Monitor
# reads the workers' clocks from those. The task events below are for monitors such
# as Flower.
worker_send_task_events = True
task_send_sent_event = True
# Monitors' event queues: an event older than 5 s is dropped instead of delivered late
# (an event backlog looks like drift), and a monitor's queue is deleted 60 s after it
# is gone. Redis delivers events by PUBLISH and keeps no backlog; these matter on AMQP.
event_queue_ttl = 5.0
event_queue_expires = 60.0
