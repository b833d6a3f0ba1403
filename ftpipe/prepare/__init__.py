"""Dataset preparation: CSV files and saved dialogues in, validated chat JSONL out."""
