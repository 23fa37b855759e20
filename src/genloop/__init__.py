"""genloop: an MLOps loop for image generators (collect, clean, augment, train, evaluate, export, serve).

Importing genloop makes OpenMP's idle threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``,
unless the environment already sets a policy). Spinning threads take the cores other trainings on
the same machine need: three trainings on 2 cores ran 15-25x slower with them. OpenMP reads the
variable once, when torch loads it, so it is set here, before any genloop module imports torch;
code that imports torch before genloop keeps OpenMP's default.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
