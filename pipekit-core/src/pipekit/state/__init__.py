"""What pipekit keeps on disk about a pipeline: the runner's state
(``_runner_state``), ``pipekit.PipelineState`` (``_pipeline_state``, with
its lock and transaction log), the hash cache, the in-flight log of
temporary files, run records, and the shape checks of what is read back
(``_shapes``)."""

from ._shapes import idem_record_fields, warn_damaged

__all__ = ["idem_record_fields", "warn_damaged"]
