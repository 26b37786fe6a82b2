"""``secserver demo``: the whole exchange on 127.0.0.1, and a scenario that proves it works.

Modules: :mod:`~secserver.demo.layout` (files and ports), :mod:`~secserver.demo.registration`
(registry entries, through the same code as ``secserver acl``), :mod:`~secserver.demo.processes`
(child processes), :mod:`~secserver.demo.scenario` (the calls and what must come back) and
:mod:`~secserver.demo.run` (the order of it all).
"""

from secserver.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
