"""Warnings logged once per process: walkers and repeated accelerators share them."""

_warned = set()
"""Keys of the warnings already logged (clear it to see them again)."""


def warn_once(logger, key, message, *arguments):
    """``logger.warning(message, *arguments)`` the first time ``key`` is seen in this process.

    Parameters
    ----------
    logger : logging.Logger
    key : hashable
        What makes two warnings the same (for example the forecaster and the exception's type).
    message : str
        ``%``-style format, as for :meth:`logging.Logger.warning`.
    """
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *arguments)
