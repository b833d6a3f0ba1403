"""Sample inputs and the assistants catalogue, installed as ftpipe.data package data."""
