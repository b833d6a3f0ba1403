"""The local OpenAI-compatible server used offline in place of api.openai.com."""
