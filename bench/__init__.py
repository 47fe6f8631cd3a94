"""Benchmarks that start the real service on loopback and report how fast it answers."""
