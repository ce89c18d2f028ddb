"""A site's lifecycle: the daemon that `ffnode start` runs.

    node.py     wiring: store, network, learner, control; the fetch and sync workers; the control handlers
    ledger.py   what each peer cost: accepted and rejected messages, the per-peer log budget, known-bad envelopes
    learner.py  policy only: which factories are due, when the expert is trained, retrained, superseded
    build.py    what is built, as pure functions: factory and expert from (data, lineage, seed, arch)
    synthcache.py the synthetic sets on disk, keyed by what determines them; purged on revocation
    outbox.py   everything this node signs: seal -> store -> gossip; sequence numbers; its own latest
                artifacts; the "left" mark
    unlearn.py  revocation: one `forget(ids)` cascade for own and peers' revocations; leaving; the
                bitwise proof (`verify_unlearning`) on build.py and the store
    progress.py what the node is doing now, and how work in a thread learns to stop
    control.py  the local control socket (JSON) and its query-image codec

Imports point one way: node -> learner -> unlearn -> outbox -> build -> synthcache, progress; ledger and
control stand alone.
"""
