"""Prefect flows (installed as `ftpipe.flows`): the entrypoints of deployments and ad-hoc runs."""

from ftpipe.tasks.logs import send_ftpipe_logs_to_runs

send_ftpipe_logs_to_runs()
