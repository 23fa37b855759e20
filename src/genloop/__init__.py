"""genloop: collect, clean, augment, train, evaluate and export generative image models, run by Prefect or DVC."""
