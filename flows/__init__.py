"""Prefect orchestration of the tunegate steps. Prefect is imported here and nowhere under steps/.

Defaults: Prefect's ephemeral local server (no PREFECT_API_URL set) with telemetry off. Point
PREFECT_API_URL at a Prefect server or Cloud workspace to use that instead; nothing else changes.
"""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # client-side analytics off
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # server-side analytics off
os.environ.setdefault("PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS", "false")
os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
