"""radam_repro: a harness to reproduce and extend RAdam (Liu et al., 2019).

Entry points: ``python -m radam_repro`` (one training cell or a Hydra sweep),
``python -m radam_repro.report`` (tables and figures from run folders),
``python -m radam_repro.analysis`` (the paper's analytic figures).
"""

__version__ = "0.1.0"
