"""Signed artifacts: canonical encoding, manifests, revocations and the content-addressed store."""
