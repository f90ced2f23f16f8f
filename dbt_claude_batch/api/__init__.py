"""The API layer: the one place an `anthropic.Anthropic` client is built, and model names.

Imports: base only. The run and observe layers use it; state never talks to the API.
"""
