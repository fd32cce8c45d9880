"""Helpers that start a real server and real SIP peers, for end-to-end tests and benchmarks."""
