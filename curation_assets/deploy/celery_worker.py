"""The Celery app a cluster's workers run (`celery -A curation_assets.deploy.celery_worker worker`, or
`dagster-celery worker start -A curation_assets.deploy.celery_worker`): dagster-celery's app, whose
`execute_plan` task runs one Dagster step, plus one worker bootstep, `RenewUnacked`.

Why the bootstep (docs/deployment.md, "A worker killed mid-step"): Redis has no acknowledgements.
kombu keeps each task a worker has taken but not acknowledged (with `task_acks_late`, until its step
ends) in a sorted set scored by delivery time, and every worker puts back in the queue the tasks
older than the broker's `visibility_timeout`. That brings back the step of a worker SIGKILLed
mid-step, but it would also bring back a step that merely runs longer than the timeout and run it a
second time elsewhere. `RenewUnacked` re-stamps this worker's own unacknowledged tasks with the
current time several times per timeout, so only a dead worker's tasks age past it, and the timeout
can be short (a killed worker's step is redelivered within it) whatever a step's length.

celery and dagster-celery are imported by name: they are in the distributed environment only
(`make setup-distributed`), not in the main one this package is type-checked in.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

bootsteps: Any = importlib.import_module("celery.bootsteps")
app: Any = importlib.import_module("dagster_celery.app").app  # registers execute_plan, execute_job, resume_job

log = logging.getLogger("curation_assets.deploy.celery_worker")
RENEWALS_PER_TIMEOUT = 4  # re-stamp this often per visibility timeout: three may be missed before it lapses


def renew_unacked(channel: Any, now: float | None = None) -> int:
    """Re-stamp the tasks `channel` (a kombu Redis channel) holds unacknowledged with `now`; returns
    how many it holds. `xx`: a task acknowledged or restored meanwhile is not added back."""
    # kombu's QoS keeps the deliveries it has not acknowledged in `_delivered` (acknowledged ones
    # linger there until flushed: `xx` skips them, they are no longer in the index)
    tags = list(channel.qos._delivered)
    if tags:
        stamp = time.time() if now is None else now
        with channel.conn_or_acquire() as client:
            client.zadd(channel.unacked_index_key, dict.fromkeys(tags, stamp), xx=True)
    return len(tags)


def visibility_timeout_s(conf: Any) -> float:
    """The broker's visibility timeout: `broker_transport_options.visibility_timeout` or kombu's default."""
    options = conf.broker_transport_options or {}
    return float(options.get("visibility_timeout", 3600))


class RenewUnacked(bootsteps.StartStopStep):
    """A consumer bootstep: while the worker lives, keep its unacknowledged tasks younger than the
    visibility timeout (Redis brokers only; AMQP brokers have real acknowledgements)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        if parent.connection.transport.driver_type != "redis":
            return
        every_s = visibility_timeout_s(parent.app.conf) / RENEWALS_PER_TIMEOUT

        def tick() -> None:
            try:  # the consumer's channel of the moment: it changes when the connection is re-established
                renew_unacked(parent.task_consumer.channel)
            except Exception as err:  # noqa: BLE001 - a lost broker connection: the consumer reconnects
                log.warning(f"could not renew this worker's unacknowledged tasks: {err!r}")

        self.timer_entry = parent.timer.call_repeatedly(every_s, tick)
        log.info(f"renewing this worker's unacknowledged tasks every {every_s:.1f} s")

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    shutdown = stop


app.steps["consumer"].add(RenewUnacked)
