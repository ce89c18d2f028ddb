"""The privacy audit of a site's factories: measured before publishing, signed into the manifest, judged by peers.

audit.py    the measurement: held-out split, memorisation (NN1/NN2, DCR) under pixel and feature distances, and
            two membership attacks (loss-based, and PIA's proximal initialisation)
attacks.py  PIA's score and the fixed random-conv feature embedding the audit uses
policy.py   the thresholds and the rule every site applies to an audit's figures (light: the store uses it)
picture.py  the owner's picture of the closest samples beside their nearest training images (never shared)
"""
