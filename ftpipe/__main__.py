"""`python -m ftpipe` is the `ftpipe` console script."""

from ftpipe.cli import app

app(prog_name="ftpipe")
