"""The service's /metrics (Prometheus text) as numbers."""

from __future__ import annotations

import urllib.request


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def requests_with_status(metrics: dict[str, float], status: int, route: str = "/predict") -> float:
    key = f'sentiment_requests_total{{method="POST",route="{route}",status="{status}"}}'
    return metrics.get(key, 0.0)
