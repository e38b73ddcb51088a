"""The hook reference: every hook suture calls, when it calls it, and what its result means.

A plugin is any object or module with functions marked ``@suture.hookimpl`` whose names match
the specs below. Plugins load in this order: built-ins (``suture.plugins.*``), installed entry
points of group ``suture``, then objects passed to :func:`suture.register`. pluggy calls the
implementations last-registered first, so a third-party plugin runs before the built-in it
overrides; for ``firstresult`` hooks the first non-``None`` answer wins and the built-in is
the fallback. Disable a plugin by name with ``SUTURE_DISABLE_PLUGINS=name,...``; list them with
``suture plugins``.

Hooks marked *hot path* run once per step call; keep them cheap. suture calls a per-step hook
only when at least one plugin implements it.

Types named in signatures (imported here only for type checkers): :mod:`suture.calls`
(``RunInfo``, ``CallInfo``, ``StepInfo``, ``AttemptStats``: plain dataclasses, cheap on the hot
path), :mod:`suture.failures` (``Failure``, ``Evidence``, ``FailureContext``, ``Action``,
``Resources``, ``RecoveryPolicy``), :mod:`suture.models` (``Question``, ``Report``),
:mod:`suture.sandbox` (``Execution``), :mod:`suture.store.base` (``Store``) and
:mod:`suture.agent` (``Agent``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - the types, for readers and type checkers only
    import click

    from .agent import Agent
    from .calls import AttemptStats, CallInfo, RunInfo, StepInfo
    from .failures import Action, Evidence, Failure, FailureContext, RecoveryPolicy, Resources
    from .models import Question, Report, RunRecord
    from .sandbox import Execution
    from .store.base import Store

hookspec = pluggy.HookspecMarker("suture")


# --------------------------------------------------------------------------------------------
# durability
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_open_store(url: str) -> Store | None:
    """Open the store (journal + state + cache + questions) for ``url``.

    Called once per process per store URL, the first time a run or a cache lookup needs it.
    ``url`` comes from ``SUTURE_STORE_URL``, else ``sqlite:///$SUTURE_HOME/suture.db``, else
    ``sqlite:///~/.suture/suture.db``. Return an object implementing
    :class:`suture.store.base.Store` if your plugin handles the URL's scheme, else ``None``.
    The built-in ``sqlite`` plugin handles ``sqlite://``; ``postgres`` handles ``postgresql://``.
    """


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_cache_key(step: StepInfo, fingerprint: str, default: str) -> str | None:
    """Override the global-cache key of a call of a ``cache=True`` step (*hot path*).

    ``step`` is the :class:`suture.models.StepInfo` (name, version, options), ``fingerprint``
    the hash of the call's canonical inputs and ``default`` the key suture would use
    (step name + version + fingerprint [+ code hash]). Return a string to use instead
    (e.g. to share entries between two model names), or ``None`` to keep the default.
    """


@hookspec(firstresult=True)
def suture_cacheable(step: StepInfo, value: Any) -> bool | None:
    """Decide whether a step's output may enter the global cache (*hot path*, cache misses only).

    Return ``False`` to keep this value out of the cache (say, an empty or refused answer);
    it is still journaled for the run. ``None`` means no opinion; the default is ``True``.
    """


# --------------------------------------------------------------------------------------------
# failure
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_classify_failure(error: BaseException | None, evidence: Evidence, context: FailureContext) -> Failure | None:
    """Turn an exception or a dead attempt into a :class:`suture.Failure`.

    ``error`` is the exception when the failure happened in this process, else ``None``;
    ``evidence`` is the :class:`suture.failures.Evidence` gathered so far (exception chain,
    exit code, signal, peak RSS and limit, stderr tail, HTTP status, Retry-After, reason);
    ``context`` is the :class:`suture.failures.FailureContext` (run, step, attempt, resources).
    Return a ``Failure`` if you recognise it, else ``None``. Classifiers are ordered: plugins
    registered later are asked first; the built-in ``classifiers`` plugin answers last and
    always answers (``layer="code"`` or ``kind="unknown"`` with the evidence kept).
    """


@hookspec(firstresult=True)
def suture_choose_action(failure: Failure, history: list[Failure], policy: RecoveryPolicy) -> Action | None:
    """Choose the recovery :class:`suture.failures.Action` for ``failure``.

    ``history`` lists the earlier failures of this run (oldest first) and ``policy`` is the
    :class:`suture.failures.RecoveryPolicy` of the agent/step (attempt budget, memory ladder,
    ceiling, backoff, ``human``). Return an ``Action`` (retry, escalate, repair,
    raise_to_agent, ask_human, give_up) or ``None`` to defer to the next implementation; the
    built-in ``policy`` plugin implements the default ladder.
    """


@hookspec(firstresult=True)
def suture_describe_options(failure: Failure, history: list[Failure], policy: RecoveryPolicy) -> list[str] | None:
    """Say in words what can still be done about ``failure`` (``failure.available_actions``).

    Called with :func:`suture_choose_action`'s arguments just before it; ``failure.as_prompt()``
    shows the answer to the agent's model ("memory can be raised to 4Gi; 2 more attempts may be
    made; ..."). A plugin that replaces the policy should describe its own ladder. Return a list of
    short phrases, or ``None`` to defer; the built-in ``policy`` plugin describes the default ladder.
    """


# --------------------------------------------------------------------------------------------
# resources
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_next_resources(failure: Failure, current: Resources, policy: RecoveryPolicy) -> Resources | None:
    """Propose the :class:`suture.failures.Resources` of the next attempt after ``failure``.

    Called when the chosen action escalates. Return the new resources, or ``None`` when you have
    no proposal. The built-in plugin climbs the policy's memory ladder for ``memory`` failures
    (and its GPU ladder for ``gpu``), and returns ``None`` at the ceiling.
    """


# --------------------------------------------------------------------------------------------
# sandbox
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_sandbox_backend(name: str) -> Any:
    """Return a sandbox backend factory for ``name`` (``"local"``, ``"e2b"``, ...), or ``None``.

    The factory is called as ``factory(**limits)`` and returns a session implementing
    :class:`suture.sandbox.Session` (``run(code) -> Execution``, files in/out, ``close()``).
    Third-party plugins add backends (Modal, Docker, Daytona) by answering their own name.
    """


@hookspec(firstresult=True)
def suture_repair_code(code: str, execution: Execution, failure: Failure, round: int) -> str | None:
    """Return repaired code for a failed sandbox execution, or ``None`` to give up.

    Called by :func:`suture.sandbox.run_with_repair` after ``code`` failed; ``execution`` is the
    :class:`suture.sandbox.Execution` and ``failure.as_prompt()`` the context to show a model.
    A model-backed repairer is a user plugin; suture ships a scripted one for tests.
    """


# --------------------------------------------------------------------------------------------
# attempts
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def suture_answer_given(run: RunRecord, question: Question, answer: Any) -> str | None:
    """A person answered ``question`` of ``run`` with ``suture answer``: deliver it to the
    orchestrator that waits for it, and return what was done (shown to the person), or ``None``.

    The answer is already validated and recorded in the store. The Prefect adapter resumes the
    paused or suspended flow run with it (``resume_flow_run(..., run_input=...)``); without an
    answer from a plugin the CLI says to resume the run with ``suture resume``.
    """


@hookspec(firstresult=True)
def suture_thread_key(run: RunInfo) -> str | None:
    """A stable key for a step called now from a thread the orchestrator runs, or ``None``.

    Called when a step is called from another thread than its frame's (a Prefect ``.map()`` or
    ``.submit()`` task in the flow's task runner). The key names the call site the same way on
    every attempt (Prefect: the task key and the task run's ``dynamic_key``); the calls made there
    are journaled in a branch of their own, ``~t:<key>``. ``None``: the call has no program order
    and raises :class:`~suture.NoRunContextError` (use ``suture.map`` or ``with_key``).
    """


@hookspec(firstresult=True)
def suture_attempt_runner(agent: Agent) -> Any:
    """Return the runner of a local run's attempts for ``agent``, or ``None`` to run them in process.

    Called when a ``@suture.agent`` function is called (or ``.run(...)``) outside any
    orchestrator. ``agent`` is the :class:`suture.agent.Agent` (``agent.options`` holds
    ``memory``, ``timeout``, ``isolate``, ...). A runner is a callable
    ``runner(agent, args, kwargs, run_id) -> result`` that owns the run from its lease to its
    end (see :mod:`suture.runs` for the pieces). The built-in ``local`` adapter answers for agents
    with real limits: each attempt then runs in a child process it watches.
    """


# --------------------------------------------------------------------------------------------
# human
# --------------------------------------------------------------------------------------------


@hookspec
def suture_deliver_question(question: Question) -> None:
    """A run asked a person a question (:class:`suture.models.Question`); deliver it.

    Called once, when the question is first stored and the run suspends. Every implementation
    is called (post to Slack, open a ticket, ...). The built-in plugin only logs where to answer
    (``suture answer RUN --json ...``).
    """


@hookspec(firstresult=True)
def suture_fetch_answer(question: Question) -> Any:
    """Return an answer for a pending ``question`` from elsewhere, or ``None``.

    Called when a suspended run resumes and the store holds no answer yet; a Slack or ticket
    plugin returns the person's reply (a dict, validated against the question's schema).
    """


# --------------------------------------------------------------------------------------------
# observability
# --------------------------------------------------------------------------------------------


@hookspec
def suture_run_start(run: RunInfo) -> None:
    """A run (:class:`suture.models.RunInfo`) starts or resumes, before its first attempt."""


@hookspec
def suture_run_end(run: RunInfo, status: str, error: BaseException | None) -> None:
    """A run ends: ``status`` is ``succeeded``, ``failed``, ``suspended`` or ``preempted``."""


@hookspec
def suture_attempt_start(run: RunInfo, attempt: int, resources: Resources) -> None:
    """An attempt of ``run`` starts with ``resources`` (a ``Resources``, possibly empty)."""


@hookspec
def suture_attempt_end(run: RunInfo, attempt: int, stats: AttemptStats) -> None:
    """An attempt ends; ``stats`` counts its steps (:class:`suture.models.AttemptStats`):
    live, replayed, cached, failed, diverged."""


@hookspec
def suture_step_start(run: RunInfo, call: CallInfo) -> None:
    """A step call is about to execute live (*hot path*): the journal had no matching entry and the
    global cache no value. Called before each execution, in-place retries included.

    An exception raised here fails that execution as if the step's body had raised it (the crash
    toolkit :mod:`suture.testing` injects faults this way). Only called when some plugin implements it.
    """


@hookspec
def suture_step_committing(run: RunInfo, call: CallInfo) -> None:
    """A live step call returned and its record is about to be written (*hot path*).

    Nothing of the call is durable yet: a process that dies here runs the step again on resume.
    Only called when some plugin implements it.
    """


@hookspec
def suture_step_end(run: RunInfo, call: CallInfo, source: str, duration: float,
                    usage: dict[str, list[int]] | None) -> None:
    """A step call finished (*hot path*): ``source`` is ``live``, ``replay`` or ``cache``.

    ``call`` is the :class:`suture.models.CallInfo` (step name, path, index, idempotency key).
    ``usage`` is the model usage of the call, ``{model: [input tokens, output tokens]}`` (keys
    ``provider:model`` when the provider is known; see :mod:`suture.usage`), or ``None``: for a live
    call what its own body recorded (paid), for a replay or a cache hit what the recorded call and its
    nested calls used (saved: nothing was paid now). Only called when some plugin implements it;
    an implementation may leave out the arguments it does not use.
    """


@hookspec
def suture_divergence(run: RunInfo, call: CallInfo, recorded: str, current: str, dropped: int) -> None:
    """A replayed call's inputs differ from the journal; ``dropped`` later entries were discarded."""


@hookspec
def suture_failure(run: RunInfo, failure: Failure) -> None:
    """A failure was classified (in a step, an attempt, or a dead child process)."""


@hookspec
def suture_recovery(run: RunInfo, failure: Failure, action: Action) -> None:
    """The recovery policy chose ``action`` for ``failure``."""


@hookspec
def suture_escalation(run: RunInfo, previous: Resources, resources: Resources, failure: Failure) -> None:
    """The next attempt runs with more ``resources`` than ``previous`` because of ``failure``."""


@hookspec
def suture_suspend(run: RunInfo, question: Question) -> None:
    """The run suspended waiting for a human answer to ``question``."""


@hookspec
def suture_publish_report(run: RunInfo, report: Report) -> None:
    """A run ended and its :class:`suture.models.Report` (timeline, failures, calls saved) is
    ready; adapters publish it (Prefect artifact, Flyte Deck, ``flyte.report``)."""


@hookspec
def suture_model_prices() -> dict[str, tuple[float, float]] | None:
    """Prices of models, in US dollars per million tokens: ``{model: (input, output)}``.

    Merged over suture's built-in table (:mod:`suture.prices`) and ``SUTURE_PRICES``; a plugin's
    entry overrides both. A model name matches a key exactly, else the longest key it starts with
    (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``); ``provider:model`` keys match usage recorded
    with that provider. Called when costs are shown, not on the hot path.
    """


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@hookspec
def suture_register_commands(cli: click.Group) -> None:
    """Add commands to the ``suture`` CLI: ``cli`` is the root :class:`click.Group`."""
