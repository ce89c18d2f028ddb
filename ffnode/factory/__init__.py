"""Per-class diffusion factories: config (torch-free, config.py), UNet (model.py), objective, training, sampling."""
