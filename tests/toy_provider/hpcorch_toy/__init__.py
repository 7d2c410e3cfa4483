"""A test-only hpcorch provider, found through the `hpcorch.providers` entry point."""
