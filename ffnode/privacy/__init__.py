"""The privacy audit of a site's factories: measured before publishing, signed into the manifest, judged by peers.

audit.py    the measurement: held-out split, memorisation (NN1/NN2, DCR) and a loss-based membership attack
policy.py   the thresholds and the rule every site applies to an audit's figures (light: the store uses it)
picture.py  the owner's picture of the closest samples beside their nearest training images (never shared)
"""
