"""Thin Prefect flows and deployments over `curation/`."""
