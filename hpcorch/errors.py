"""One exception hierarchy, rooted at HpcorchError.

Every error prints as one line that says what went wrong and where; provider
errors carry the context a person needs to find the job again.
"""

from __future__ import annotations

from collections.abc import Sequence


class HpcorchError(Exception):
    """Base of every error hpcorch raises on purpose."""


class ConfigError(HpcorchError, ValueError):
    """A setting has a value hpcorch cannot accept; raised before anything starts.

    The message names the setting, the value and what is allowed.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={value!r}: {allowed}")


class ProviderUnavailable(HpcorchError):
    """The provider's engine cannot be reached; the message says how to fix it."""


class ProviderError(HpcorchError):
    """An engine command failed. Prints as `[slurm job=123_4 node=c017] sbatch rc=1: ...`."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        job_id: str | None = None,
        node: str | None = None,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.provider = provider
        self.job_id = job_id
        self.node = node
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        where = " ".join(
            part
            for part in (
                provider,
                f"job={job_id}" if job_id else "",
                f"node={node}" if node else "",
            )
            if part
        )
        head = f"{self.argv[0]} rc={returncode}: " if self.argv else ""
        tail = f" | {stderr_tail.strip().splitlines()[-1]}" if stderr_tail.strip() else ""
        super().__init__(f"[{where}] {head}{message}{tail}")


class RunFailed(HpcorchError):
    """A run of a sweep failed; raised by the launcher after every other run has finished."""


class StoreError(HpcorchError):
    """The run store or a record file cannot be read or written."""


class TransientSubmitError(ProviderError):
    """A submission the engine refused for a passing reason (a socket time-out), after
    the provider made sure that nothing of it got through. `submitted` holds the
    handles of the runs of the same batch that did get in; the orchestrator submits
    the rest again later, with backoff (`hpcorch.retry.submit`), while it watches."""

    def __init__(self, provider: str, message: str, *, submitted: Sequence[object] = (),
                 **context: object) -> None:
        super().__init__(provider, message, **context)  # type: ignore[arg-type]
        self.submitted = list(submitted)
