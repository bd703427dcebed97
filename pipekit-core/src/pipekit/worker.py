"""``python -m pipekit.worker``: run one attempt of one stage, in a process
of its own, for stages whose timeout the runner must be able to enforce by
killing. Reads a JSON job on stdin, writes a JSON result file."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path


def main() -> int:
    from . import _json
    from .errors import NonRetryable
    from .execute import run_in_process
    from .pipeline import load_pipeline
    from .plugins import load_registry
    from .stage import StageContext

    job = _json.loads(sys.stdin.buffer.read())
    result_path = Path(job["result"])
    sys.stdout = sys.stderr  # a processor's prints must not reach the protocol
    network = None
    try:
        registry = load_registry()
        pipeline = load_pipeline(
            Path(job["file"]), registry, backend_override=job["backend"], check_inputs=False
        )
        st = pipeline.stages[job["stage"]]
        checkpoint = None
        if job.get("checkpoint"):
            from .runner import make_backends
            from .stage import Checkpoint

            store = make_backends(registry, pipeline).checkpoints
            cp = job["checkpoint"]
            fence = cp.get("fence")
            checkpoint = Checkpoint(
                store, cp["namespace"], cp["fingerprint"], fence=tuple(fence) if fence else None
            )
        ctx = StageContext(
            stage_name=st.name,
            run_id=job["run_id"],
            inputs=list(st.input_paths),
            outputs=[Path(p) for p in job["outputs"]],
            params=st.params,
            log=logging.getLogger(f"pipekit.stage.{st.name}"),
            final_outputs=list(st.output_paths),
            attempt=job["attempt"],
            workdir=pipeline.root,
            checkpoint=checkpoint,
        )
        policy = None
        if job.get("network"):
            from .netguard import Policy

            policy = Policy.from_json(job["network"])
        try:
            info = run_in_process(st, ctx, policy=policy)
        finally:
            network = ctx.info.pop("network", None)
        out = {"ok": True, "info": info, "network": network}
    except BaseException as exc:  # reported to the parent, which decides
        from .errors import NetworkRefused

        non_retryable = isinstance(exc, NonRetryable)
        try:
            non_retryable = non_retryable or isinstance(exc, st.processor.non_retryable)
        except Exception:
            pass
        out = {
            "ok": False,
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "non_retryable": non_retryable,
            "network_refused": isinstance(exc, NetworkRefused),
            "network": network,
        }
    result_path.write_bytes(_json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
