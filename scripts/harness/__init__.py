"""The research harness: what the scripts and tests use to run and judge federations. The daemon never
imports it (scripts put this folder's parent on sys.path; pytest does through pyproject's `pythonpath`).

    localnet.py      real `ffnode` daemons on 127.0.0.1, one process and home each
    memory.py        resident memory of every daemon and the workers below it, sampled through a run
    partition.py     silo and Dirichlet partitions of a labelled set
    metrics.py       accuracy and macro AUROC
    baselines/       FedAvg, FedProx, FedDyn, SCAFFOLD: one strategy per file, one simulation loop
    report_chart.py  the bar chart of a testnet report, and the scale chart (memory and wall against sites)
"""
