"""A site's lifecycle: the daemon that `ffnode start` runs. It imports no torch: learning runs as jobs.

    node.py     wiring: store, network, intake, learner, job runner, query service, control; the local data
    intake.py   what peers send: gossip validation and acceptance, blob fetches, inventory sync, the fault state
    handlers.py the control handlers (status, peers, artifacts, query, revoke, leave, verify-unlearning, trust)
    timing.py   the learner's timing rules (patience, grace, deadline) as pure functions of (store, time)
    ledger.py   what each peer cost: accepted and rejected messages, the per-peer log budget, known-bad envelopes
    learner.py  policy only: which factories are due, when the expert is trained, retrained, superseded; each
                build is a job (ffnode/jobs/), and a peer factory a job blames is skipped
    outbox.py   everything this node signs: seal -> store -> gossip; sequence numbers; its own latest
                artifacts; the "left" mark
    unlearn.py  revocation: one `forget(ids)` cascade for own and peers' revocations; leaving; the
                bitwise proof (`verify_unlearning`), whose rebuild is a job
    control.py  the local control socket (JSON) and its query-image codec

Imports point one way: node -> intake, handlers -> learner -> unlearn -> outbox; ledger and control stand alone.
"""
