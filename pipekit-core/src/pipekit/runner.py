"""Where the runner used to live (kept while modules move into layers)."""

from .backends.assemble import Backends, build_backends, make_backends
from .engine import Runner, RunOptions, RunOutcome, new_run_id

__all__ = ["RunOptions", "Backends", "Runner", "RunOutcome", "make_backends", "build_backends", "new_run_id"]
