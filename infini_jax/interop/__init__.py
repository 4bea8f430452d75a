"""Interoperability: the Hugging Face Llama mapping (config fields and weight layout)."""
