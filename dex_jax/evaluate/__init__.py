"""Evaluation: the paper's metrics as CLU metrics, benchmarks, reenactment protocols, reports, the SynthHeads probe."""
