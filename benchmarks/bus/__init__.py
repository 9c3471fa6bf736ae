"""The demo bus's benchmark, by job; ``benchmarks/bus_benchmark.py`` is its command."""

from __future__ import annotations


class BenchmarkError(Exception):
    """A scenario could not be set up (broker, topics, CLI, worker); the run goes on with the next."""
