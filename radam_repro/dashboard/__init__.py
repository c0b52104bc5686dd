"""Live TensorBoard over run folders: ``python -m radam_repro.dashboard <sweep or run folders...>``.

:mod:`~radam_repro.dashboard.convert` turns run folders into TensorBoard event files incrementally
(the run folder stays the source of truth); ``__main__`` keeps converting while TensorBoard serves.
"""

from radam_repro.dashboard.convert import Converter

__all__ = ["Converter"]
