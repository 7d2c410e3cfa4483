"""hpcorch's Hydra plugins: the `hpcorch` launcher and sweeper, and hpcorch's config path."""
