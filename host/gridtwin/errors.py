"""The project's documented exceptions.

Every layer converts the errors of the layer below (OSError, ssl errors, sqlite3 errors, paho
return codes, subprocess failures) into one of these, with a message a user can act on: what is
wrong, where, and how to fix it. The CLI prints ``gridtwin: <message>`` for any of them and exits
with ``exit_code``; it never shows a traceback for them unless ``--verbose`` is given.
"""


class GridTwinError(Exception):
    """Base of every error the CLI reports as one clear line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GridTwinError):
    """A file the user writes (site.toml, a board file) is wrong: names file, key and fix."""

    exit_code = 2

    def __init__(self, file, key: str | None, problem: str, fix: str | None = None):
        where = f"{file}: {key}" if key else f"{file}"
        message = f"{where}: {problem}"
        super().__init__(message, hint=fix)
        self.file, self.key, self.problem, self.fix = str(file), key, problem, fix


class UsageError(GridTwinError):
    """The command line itself is wrong."""

    exit_code = 2


class NotBuiltError(GridTwinError):
    """A verb whose implementation has not landed yet."""

    exit_code = 3


class PKIError(GridTwinError):
    """Certificates and keys: missing CA, unknown identity, refusing to overwrite."""


class BrokerError(GridTwinError):
    """Rendering, installing or running Mosquitto."""


class ToolError(GridTwinError):
    """An external tool (micropython, mpy-cross, mpremote, esptool, mosquitto) failed or is
    missing."""


class CommandTimeout(GridTwinError):
    """A node did not acknowledge a command in time."""

    exit_code = 4
