"""Reliability and deployment scripts. Run them from the repository root as modules, e.g.
`python -m scripts.overload --help`; what they share lives in the `bench` package."""
