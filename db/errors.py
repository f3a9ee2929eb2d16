"""Errors meant for the person running the workbench (shown without a traceback)."""


class WorkbenchError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""

    exit_code = 1


class UserInputError(WorkbenchError):
    """Bad input from the user (a malformed file, an unknown name): exit status 2."""

    exit_code = 2


class DatabaseUnavailable(UserInputError):
    """The database cannot be opened or reached (a wrong URL, a server that is down)."""


class MissingKeyError(UserInputError):
    """A hosted model is named but its API key (or local endpoint) is not configured here."""


class NotFoundError(UserInputError):
    """A named object (study, source, model) does not exist."""


def yaml_problem(path, exc: Exception, what: str = "") -> str:
    """One line for a YAML syntax error: ``file:line:column: invalid YAML<what>: problem`` (yaml's own
    message spans several lines with the marks)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"{where}: invalid YAML{what}: {problem}" + (f" ({context})" if context else "")
