"""HTTP routes of the local server, one module per OpenAI API area."""
