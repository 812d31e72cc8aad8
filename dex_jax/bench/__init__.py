"""`dex-portrait bench NAME`: benchmarks that print figures (speed is never asserted in tests)."""

import importlib

BENCHMARKS = {
    "motion": "dex_jax.bench.motion_bench",
}


def main(argv):
    if not argv or argv[0] not in BENCHMARKS:
        raise ValueError(f"bench needs one of {sorted(BENCHMARKS)}, got {argv[:1]}")
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
