"""Errors a user can fix: their message says what is wrong and what to do.

The project's `kedro run` prints a `UserError` as one short message, without a traceback
(set SPAHGC_TRACEBACK=1 to see it); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputDataError", "MissingInputError", "ParameterError", "UserError", "find_user_error"]


class UserError(Exception):
    """A problem with the user's data, parameters or set-up, explained by its message."""


class InputDataError(UserError, ValueError):
    """Raw input that cannot be turned into a standard section; the message says what to fix."""


class ParameterError(UserError, ValueError):
    """A parameter value the run cannot use; the message names the parameter, the value and what is allowed."""


class MissingInputError(UserError, FileNotFoundError):
    """An input another stage (or the user) has to provide first; the message gives the command."""


def find_user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind `error` (itself, or what it was raised from or during), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
