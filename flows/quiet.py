"""Prefect settings for runs on a machine with no network: set before Prefect is imported.

Without these, a local run logs telemetry errors (no network) and, at shutdown, long tracebacks
from the ephemeral server's event services: noise a user should not see. Every value is a
default only, so a user's own environment wins.
"""

from __future__ import annotations

import logging
import os

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "DO_NOT_TRACK": "1",
    # The first ephemeral start runs migrations (~12 s here); a cold CI machine needs headroom.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
}


class DropDocsHint(logging.Filter):
    """Keeps "Starting temporary server on ..." (it explains the wait) and drops the docs link
    Prefect appends to it on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "\nSee https://www.prefect.io" in record.msg:
            record.msg = record.msg.split("\nSee ", 1)[0]
        return True


class DropDisconnectTraceback(logging.Filter):
    """A websocket that closed because the server stopped is worth the one warning line Prefect
    writes ("... Switching to polling mode"), not the traceback under it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (type(error).__module__.startswith("websockets")
                                  or isinstance(error, (ConnectionError, TimeoutError))):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_prefect_handlers() -> None:
    """After Prefect set up its logging (its console handler sits on the root logger and a few
    non-propagating ones): a filter on every handler, so it sees records from any logger."""
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                      if isinstance(x, logging.Logger))]
    for handler in {id(h): h for x in loggers for h in x.handlers}.values():
        if not any(isinstance(f, DropDisconnectTraceback) for f in handler.filters):
            handler.addFilter(DropDisconnectTraceback())


def quiet_prefect() -> None:
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("prefect.server", "prefect._internal", "uvicorn", "uvicorn.error", "docket",
                 "prefect.server.events", "prefect.server.services"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # "Still processing items" at shutdown: the events client draining its queue, nothing to act on.
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    # The temporary server's start message is logged on the "prefect" logger itself (a logger's
    # filters see only its own records, so this touches nothing else).
    root = logging.getLogger("prefect")
    if not any(isinstance(f, DropDocsHint) for f in root.filters):
        root.addFilter(DropDocsHint())


quiet_prefect()
