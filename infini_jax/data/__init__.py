"""Data: sources, sentencepiece tokenizer, ArrayRecord preparation, synthetic corpus, grain."""
