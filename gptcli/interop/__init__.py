"""The borders: Hugging Face GPT-2 weights in and out."""
