"""The paper's pipeline, on top of the runs: it reads collected records and never trains itself.

``experiments/`` holds one module per paper experiment, each registering an ``Experiment``
(``experiment.py``; ``catalog.load`` imports them). ``profiles`` names the profiles, ``plan`` expands
an experiment's sweep into jobs under a profile and ``costs`` estimates them, ``reproduce`` runs the
sweeps and ``gather`` collects them; ``draw`` turns collected tables into every experiment's figures
(``figkit``, ``layerfigures``), its ``tables``, the verdicts of its rules (``claims``, ``judge``) and
``report`` (REPRODUCTION.md). ``labels`` holds the paper's names (LDI, VS-L, ...); ``figures`` is the
`sparseprop figures` command.
"""
