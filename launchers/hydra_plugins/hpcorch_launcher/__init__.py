"""hpcorch's Hydra plugins: the `hpcorch` launcher and the search path that ships hpcorch's configs."""
