"""Tests of the ``tracing`` extra (OpenTelemetry SDK): run whenever the SDK is installed, left
out when it is not (the default install has only opentelemetry-api, through FastAPI):

    pip install opentelemetry-sdk && pytest tests/tracing
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("opentelemetry.sdk") is None:
    collect_ignore_glob = ["test_*.py"]
