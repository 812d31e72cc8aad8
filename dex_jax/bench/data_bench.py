"""`dex-portrait bench data`: Stage-1 input pipeline throughput (examples/s) with 0 and 2 grain workers.

Without --dataset_dir it first renders a small synth_heads dataset (512 px, 4 views) into a temporary folder.
Throughput is timed after the first batch, so worker start-up is left out.
"""

import argparse
import dataclasses
import tempfile
import time

from dex_jax.arguments import ArgumentParser
from dex_jax.data.pipeline import default_config, make_loader
from dex_jax.quiet_logs import stdout_to_log


def build_bench_dataset(data_dir, size):
    """A small multi-view synth_heads dataset at `size` px; returns its folder."""
    from dex_jax.data.tfds_synth_heads import SynthHeads
    tiny = next(c for c in SynthHeads.BUILDER_CONFIGS if c.name == "tiny")
    config = dataclasses.replace(tiny, name=f"bench{size}", description="throughput benchmark", image_size=size,
                                 num_identities=3, num_test_identities=1, num_views=4, num_frames=8)
    builder = SynthHeads(config=config, data_dir=data_dir, file_format="array_record")
    with stdout_to_log("tensorflow_datasets"):
        builder.download_and_prepare()
    return builder.data_dir


def examples_per_second(config, kind, batches):
    """(examples/s over `batches` batches after the first, seconds to the first batch)."""
    start = time.perf_counter()
    iterator = iter(make_loader(config, kind))
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size / (time.perf_counter() - start), first


def main(argv):
    parser = ArgumentParser(prog="dex-portrait bench data", description=__doc__,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset_dir", default=None,
                        help="a built dataset version folder; without it a small one is rendered")
    parser.add_argument("--data_size", type=int, default=512, help="image size of the rendered bench dataset")
    parser.add_argument("--image_size", type=int, default=256, help="pipeline output image size")
    parser.add_argument("--expression_size", type=int, default=224, help="expression crop size")
    parser.add_argument("--batch_size", type=int, default=8, help="examples per batch")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per worker count")
    parser.add_argument("--kind", default="pairs", choices=("pairs", "clips"), help="what the loader yields")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="grain worker counts to time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dataset_dir = args.dataset_dir or build_bench_dataset(tmp, args.data_size)
        config = default_config()
        config.update({"dataset_dir": str(dataset_dir), "image_size": args.image_size,
                       "expression_size": args.expression_size, "batch_size": args.batch_size, "clip_length": 8})
        print(f"dataset {dataset_dir}: {args.kind}, S={args.image_size} E={args.expression_size} "
              f"K={config.num_driving if args.kind == 'pairs' else config.clip_length} batch {args.batch_size}")
        for workers in args.workers:
            config.worker_count = workers
            rate, first = examples_per_second(config, args.kind, args.batches)
            print(f"  {workers} workers: {rate:7.1f} examples/s  (first batch after {first:.1f} s)")
    return 0
