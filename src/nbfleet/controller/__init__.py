"""The control loop that converges the world (runtimes) to what the store says."""
