"""The Prefect wiring of genloop: the flows genloop-pipeline and genloop-loop (``flows.pipeline``),
genloop-sweep (``flows.sweep``) and the process serving them as deployments (``python -m flows.serve``).

Installed with genloop (see ``[tool.setuptools.packages.find]`` in pyproject.toml), so Prefect runners
and Dask workers import these modules by name.
"""
