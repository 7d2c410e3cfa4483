"""Config groups shipped with hpcorch; on every app's search path via the SearchPathPlugin."""
