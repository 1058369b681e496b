"""Benchmarks: ``python -m HPOToolsLib bench <name> [--json]`` (see ``benchmarks.cli``) and the
benchmark functions of ``benchmarks.functions``."""
