"""Pure logic: models, losses, metrics, privacy accounting. Tensors and arrays in and out; no files, no tools."""
