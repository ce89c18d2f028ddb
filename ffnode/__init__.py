"""ffnode: a FederatedFactory node (arXiv 2603.16370) on libp2p.

The data path, top to bottom, one module (or package) a step:

    data/        a site's images from a dataset spec (read in a process of its own), and query images -> uint8
    factory/     one small diffusion UNet per local class (the generative matrix Γ): config, objective,
                 training, sampling
    privacy/     audit: each own factory against its training images and a held-out slice before it is published,
                 and the policy every site applies to the figures signed into a peer's manifest
    artifacts/   announce: canonical msgpack, signed manifests and revocations, the content-addressed store
    net/         fetch/verify: the libp2p host in its trio thread (relays, hole punching), the blob and sync
                 stream protocols, discovery of the federation's members by signed peer records
    arch.py      a peer's arch parsed and bounded (its model sized from the config, without torch)
    loaders.py   a verified manifest and its blob -> the factory or expert it describes
    synth.py     synthesise: class-balanced samples from the peers' factories
    expert/      each site's classifier: ResNet and its (bitwise repeatable) training
    jobs/        every training, synthesis and rebuild as a job in its own process: spec, the pure builds, the
                 worker, the local and Ray runners (limits, blame)
    poe.py       Product of Experts: the paper's product and the prior-corrected rule
    voters.py    which experts answer and which classes they cover, from their manifests alone (torch-free)
    query.py     the experts as modules, answering by PoE; query_worker.py runs it in a warm process
    export.py    the PoE a site answers with, as one ONNX file and a sidecar (and whether an export is stale)
    daemon/      a site's lifecycle, without torch: node wiring, what peers send, control handlers, peer ledger,
                 learner policy, outbox, unlearning
    api/         the node's HTTP face when [api] is on: queries, state, actions, Prometheus metrics, a status page
    cli/         the `ffnode` command: one module per command group

Beside the path: config.py (the node's TOML), profiles.py (sizes per hardware), schedule.py (the lr
schedule), device.py (cuda/cpu, bf16), identity.py (the Ed25519 key), plainconfig.py (configs in manifests),
events.py (the home's audit trail, events.jsonl), stats.py (the histograms the metrics export), logs.py (the
library's records in the node's format, repeated warnings counted).
The research harness (testnet, baselines, charts) lives in scripts/harness/, never imported from here.
"""

__version__ = "0.1.0"
