"""HTTP routes, one module per resource: predictions and operations (health, readiness, info, metrics)."""
