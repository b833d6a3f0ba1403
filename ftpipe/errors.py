"""Errors a user can act on; their text is shown as is, without a traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used: the message names the file (or field) and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuild from (source, problem), so the error survives pickling (Prefect results)."""
        return (type(self), (self.source, self.problem))
