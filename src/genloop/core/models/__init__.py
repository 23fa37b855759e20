"""PyTorch models, each sized from the image shape (8x8 digits, 28x28 MNIST-family)."""
