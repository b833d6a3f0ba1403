"""`python -m ftpipe` is the `ftpipe` console script."""

from ftpipe.cli import run

run()
