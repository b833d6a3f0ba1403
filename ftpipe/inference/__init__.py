"""Real chat completions from local models, served by a worker process of their own.

`client.InferenceWorker` (no torch import) drives `python -m ftpipe.inference.worker`, which
holds the models (`engine`); `protocol` defines the JSON lines between them.
"""
