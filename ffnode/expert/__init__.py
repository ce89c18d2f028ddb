"""Experts: the per-site classifiers whose log-probabilities PoE adds up: config (torch-free, config.py), ResNet
(resnet.py) and its bitwise repeatable training (train.py)."""
