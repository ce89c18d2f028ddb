"""Signed artifacts: canonical encoding, manifests, revocations, charters, the content-addressed store."""
