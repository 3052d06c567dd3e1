"""Evaluators: re-ID retrieval, face verification, kNN, linear probe."""
