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


def quiet_prefect() -> None:
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("prefect.server", "prefect._internal", "uvicorn", "uvicorn.error", "docket",
                 "prefect.server.events", "prefect.server.services"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


quiet_prefect()
