"""flytekit attempts driven the way a Flyte cluster drives them, for any task module: a pod is
flytekit's container entrypoint (``pyflyte-execute``, or ``pyflyte-map-execute`` for a map subtask)
with ``--checkpoint-path`` / ``--prev-checkpoint`` and ``FLYTE_ATTEMPT_NUMBER``, on local paths;
:func:`propeller` retries a node's attempts while the error is recoverable, within the task's retries.

The generalised form of ``attempt`` in tests/flyte/test_flytekit.py (which is bound to fk_tasks and
string inputs); the conformance driver and the map-task tests use this one."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENTRYPOINT = "from flytekit.bin.entrypoint import {0}; {0}()"


@dataclass
class Pod:
    """What one attempt left: its exit code, output prefix and checkpoint path, its logs."""

    code: int
    out: Path
    checkpoint: Path
    stderr: str

    def error(self) -> Any:
        """flytekit's ContainerError of this attempt (``error.pb``), or ``None`` when it succeeded."""
        from flyteidl.core import errors_pb2
        from flytekit.models.core.errors import ErrorDocument

        path = self.out / "error.pb"
        if not path.exists():
            return None
        doc = errors_pb2.ErrorDocument()
        doc.ParseFromString(path.read_bytes())
        return ErrorDocument.from_flyte_idl(doc).error

    def recoverable(self) -> bool:
        err = self.error()
        return err is not None and err.kind == 1  # ContainerError.Kind.RECOVERABLE

    def output(self, name: str, python_type: type) -> Any:
        from flyteidl.core import literals_pb2
        from flytekit.core.context_manager import FlyteContextManager
        from flytekit.core.type_engine import TypeEngine
        from flytekit.models.literals import LiteralMap

        lm = literals_pb2.LiteralMap()
        lm.ParseFromString((self.out / "outputs.pb").read_bytes())
        literal = LiteralMap.from_flyte_idl(lm).literals[name]
        return TypeEngine.to_python_value(FlyteContextManager.current_context(), literal, python_type)


def write_inputs(path: Path, inputs: dict[str, tuple[Any, type]]) -> Path:
    """``inputs`` (name -> (value, python type)) as the LiteralMap file a pod reads."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    ctx = FlyteContextManager.current_context()
    literals = {k: TypeEngine.to_literal(ctx, v, t, TypeEngine.to_literal_type(t)) for k, (v, t) in inputs.items()}
    path.write_bytes(LiteralMap(literals).to_flyte_idl().SerializeToString())
    return path


def pod(workdir: Path, module: str, task: str, n: int, prev: Path | None, env: dict[str, str], *,
        execution: str, inputs: Path, cwd: Path, out: Path | None = None, checkpoint: Path | None = None,
        map_index: int | None = None, timeout: float = 180) -> Pod:
    """Attempt ``n`` of ``module.task`` in a new process (a new pod): execution ``execution`` in
    project ``proj``, domain ``dev``. ``map_index``: a subtask of a map task over ``task``, run by
    ``pyflyte-map-execute`` with the index in the environment as Flyte's array plugin sets it."""
    out = out or workdir / f"{execution}-out{n}"
    checkpoint = checkpoint or workdir / f"{execution}-cp{n}"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.mkdir(parents=True, exist_ok=True)
    run_env = dict(env, FLYTE_ATTEMPT_NUMBER=str(n), FLYTE_INTERNAL_EXECUTION_ID=execution,
                   FLYTE_INTERNAL_EXECUTION_PROJECT="proj", FLYTE_INTERNAL_EXECUTION_DOMAIN="dev")
    resolver = ["--resolver", "flytekit.core.python_auto_container.default_task_resolver", "--",
                "task-module", module, "task-name", task]
    if map_index is None:
        cmd = [sys.executable, "-c", ENTRYPOINT.format("execute_task_cmd")]
    else:
        cmd = [sys.executable, "-c", ENTRYPOINT.format("map_execute_task_cmd")]
        resolver = ["--resolver", "flytekit.core.array_node_map_task.ArrayNodeMapTaskResolver", "--",
                    "vars", "", "resolver", *resolver[1:2], *resolver[3:]]
        run_env.update(BATCH_JOB_ARRAY_INDEX_VAR_NAME="FLYTE_K8S_ARRAY_INDEX", FLYTE_K8S_ARRAY_INDEX=str(map_index))
    cmd += ["--inputs", str(inputs), "--output-prefix", str(out), "--raw-output-data-prefix", str(workdir / "raw"),
            "--checkpoint-path", str(checkpoint), "--prev-checkpoint", str(prev) if prev else '""', *resolver]
    proc = subprocess.run(cmd, env=run_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Pod(proc.returncode, out, checkpoint, proc.stderr)


def propeller(workdir: Path, module: str, task: str, retries: int, env: dict[str, str], *, execution: str,
              inputs: Path, cwd: Path, on_attempt: Any = None, **kwargs: Any) -> list[Pod]:
    """One node the way Flyte runs it: attempts 0, 1, ... while the error is recoverable, at most
    ``retries + 1``; each attempt gets the previous attempt's checkpoint."""
    pods: list[Pod] = []
    prev = None
    for n in range(retries + 1):
        p = pod(workdir, module, task, n, prev, env, execution=execution, inputs=inputs, cwd=cwd, **kwargs)
        pods.append(p)
        if on_attempt is not None:
            on_attempt(p)
        if not p.recoverable():
            break
        prev = p.checkpoint
    return pods
