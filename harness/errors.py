class HarnessError(Exception):
    """A problem the user can fix (bad config, missing file, offline hub, ...).

    The CLI prints its message as one line and exits non-zero, without a traceback.
    """
