"""Orchestration around the stages: what reruns, retries, sweeps, and what a Prefect run shows."""
