"""Real fine-tuning (transformers + peft + trl) in a worker process of its own.

Nothing here imports FastAPI; torch and the Hugging Face stack are imported only inside the
worker and the functions that need them, so importing this package stays cheap.
"""
