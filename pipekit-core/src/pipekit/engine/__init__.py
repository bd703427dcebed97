"""The engine: the scheduler, the one attempt lifecycle of a stage, and the
runner that holds a run together (see ``docs/development.md``)."""

from ._runner import Runner, RunOutcome
from ._services import RunOptions, new_run_id

__all__ = ["Runner", "RunOutcome", "RunOptions", "new_run_id"]
