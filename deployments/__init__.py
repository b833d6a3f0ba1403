"""Prefect deployments (prefect.yaml), installed as ftpipe.deployments package data."""
