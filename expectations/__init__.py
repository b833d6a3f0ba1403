"""Great Expectations suites (JSON), installed as ftpipe.expectations package data."""
