"""recipes/mnist.yaml is params.yaml with the VAE's MNIST settings: every other line the same, so a knob
added to params.yaml cannot be missing from the recipe (the config refuses unknown and, here, stale keys)."""
from pathlib import Path

from genloop.config import load_params

ROOT = Path(__file__).resolve().parents[2]


def body(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def test_the_mnist_recipe_is_params_yaml_but_for_its_marked_vae_lines():
    recipe, shipped = body(ROOT / "recipes" / "mnist.yaml"), body(ROOT / "params.yaml")
    assert len(recipe) == len(shipped)
    differing = [(r, s) for r, s in zip(recipe, shipped) if r != s]
    assert [r.split(":")[0].strip() for r, _ in differing] == ["latent_dim", "beta"]
    assert all("# recipe:" in r for r, _ in differing)
    vae = load_params(ROOT / "recipes" / "mnist.yaml", required=True).train.vae
    assert (vae.latent_dim, vae.beta, vae.prior) == (20, 1.0, "fitted_gaussian")
