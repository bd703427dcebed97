"""The plan: the pipeline file's schema (``_config``), the validated
pipeline with its stages in DAG order (``_pipeline``: one type, whether it
comes from the file or from the plan cache) and the plan cache
(``_plan_cache``)."""

from ._config import PipelineConfig, StageConfig, structure_params

__all__ = ["PipelineConfig", "StageConfig", "structure_params"]
