"""ffnode: a FederatedFactory node (arXiv 2603.16370) on libp2p."""

__version__ = "0.1.0"
