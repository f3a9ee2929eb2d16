"""Errors meant for the person running the workbench (shown without a traceback)."""


class WorkbenchError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""

    exit_code = 1


class UserInputError(WorkbenchError):
    """Bad input from the user (a malformed file, an unknown name): exit status 2."""

    exit_code = 2


class MissingKeyError(UserInputError):
    """A hosted model is named but its API key (or local endpoint) is not configured here."""


class NotFoundError(UserInputError):
    """A named object (study, source, model) does not exist."""
