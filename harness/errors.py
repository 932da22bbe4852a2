class HarnessError(Exception):
    """A problem the user can fix (bad config, missing file, offline hub, ...).

    The CLI prints its message as one line and exits non-zero, without a traceback.
    """


class RunInterrupted(HarnessError):
    """Ctrl-C during a run: what was finished is kept; the CLI says how far it got and exits 130."""
