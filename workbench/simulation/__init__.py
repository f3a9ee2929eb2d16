"""The simulated user and the batch runner."""
