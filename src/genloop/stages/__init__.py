"""The six stages of the loop, one module each. Prefect tasks, DVC stages and tests all call these functions."""
