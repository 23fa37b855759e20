"""The two generator kinds genloop trains, in the order every table, loop and report lists them."""
from __future__ import annotations

MODELS = ("vae", "gan")
