"""The sweep: a grid of runs (spec), its runner, and the CI regression baseline."""
