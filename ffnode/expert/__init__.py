"""Experts: the per-site classifiers whose log-probabilities PoE adds up."""

from ffnode.expert.resnet import ExpertConfig, build_expert, expert_from_weights
from ffnode.expert.train import expert_log_probs, train_expert

__all__ = ["ExpertConfig", "build_expert", "expert_from_weights", "expert_log_probs", "train_expert"]
