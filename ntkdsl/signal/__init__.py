"""Signal propagation through deep nets (Poole et al. 2016, Schoenholz et al. 2017,
Xiao et al. 2018): the mean-field maps of a spec's repeated block, their fixed
points, the order/chaos phase, depth scales, and what they predict for the
kernels at a given depth. See docs/analyze.md.
"""

from .analysis import Analysis, analyze, propagate, warn_if_deep
from .chain import Block, Chain, NotCovered, find_chain

__all__ = ["Analysis", "Block", "Chain", "NotCovered", "analyze", "find_chain", "propagate",
           "warn_if_deep"]
