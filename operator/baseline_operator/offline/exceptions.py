"""BaselineExceptions read from files, for `audit --exceptions`: the same verdict as the cluster.

Files and directories (recursively, as `-f`) are read with the audit's own bounded
reader; objects of other kinds (a kustomization.yaml beside them) are passed over,
and an object of kind BaselineException that is not valid stops the run, since the
API server would refuse it. Which exceptions are in force, and what they waive,
is `policy.exceptions`' decision, at the moment `--at` (default: now).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from baseline_operator.api.exception import (
    EXCEPTION_KIND,
    BaselineException,
    InvalidException,
    parse_exception,
)
from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.policy.exceptions import (
    ActiveException,
    ExceptionVerdict,
    judge,
)


class ExceptionInputError(Exception):
    """An exceptions file that cannot be read, or an invalid BaselineException."""


@dataclass(frozen=True)
class LoadedExceptions:
    """The verdict on every exception read that names the baseline, and those in force."""

    verdicts: tuple[ExceptionVerdict, ...]
    active: tuple[ActiveException, ...]
    other_baselines: int  # exceptions read that relax another baseline (ignored)


def read_exceptions(paths: Sequence[str], stdin: TextIO) -> list[BaselineException]:
    """Every BaselineException in the files and directories (sorted by name)."""
    from baseline_operator.offline.audit import (  # noqa: PLC0415 - audit imports this module
        InputProblem,
        _shown,
        expand_paths,
        read_documents,
    )

    found: dict[str, BaselineException] = {}
    for path in expand_paths(paths):
        if isinstance(path, InputProblem):
            raise ExceptionInputError(path.message)
        for item in read_documents(path, stdin):
            if isinstance(item, InputProblem):
                raise ExceptionInputError(item.message)
            body = item.body
            if not isinstance(body, dict) or body.get("kind") != EXCEPTION_KIND:
                continue
            where = f"{_shown(item.source)}:{item.line}" if item.line else _shown(item.source)
            try:
                exception = parse_exception(body)
            except InvalidException as exc:
                errors = "; ".join(str(error) for error in exc.errors)
                raise ExceptionInputError(
                    f"{where}: not a valid BaselineException: {errors}"
                ) from None
            if exception.name in found:
                raise ExceptionInputError(
                    f"{where}: BaselineException {exception.name} is defined more than once"
                )
            found[exception.name] = exception
    return [found[name] for name in sorted(found)]


def judge_exceptions(
    baseline: SecurityBaseline, exceptions: Iterable[BaselineException], at: datetime
) -> LoadedExceptions:
    """The verdict at `at` on each exception of this baseline (an exception without a
    creationTimestamp is judged as if it were applied at `at`)."""
    verdicts = []
    active = []
    others = 0
    for exception in exceptions:
        if exception.spec.baseline != baseline.name:
            others += 1
            continue
        verdict = judge(exception, baseline, at)
        verdicts.append(verdict)
        if verdict.active:
            active.append(ActiveException.of(exception))
    return LoadedExceptions(tuple(verdicts), tuple(active), others)
