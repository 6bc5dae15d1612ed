"""Errors a user can hit. The CLI prints their message without a traceback and exits 2."""


class EdgeSerError(Exception):
    """Base class: the message says what was wrong and what to do."""


class AudioError(EdgeSerError):
    """Audio that cannot be decoded or used (corrupt, empty, NaN/Inf, unsupported)."""


class DatasetError(EdgeSerError):
    """A corpus, manifest or label that cannot be used."""


class BundleError(EdgeSerError):
    """A bundle that is missing, tampered with, or of an unknown schema."""


class LabelError(DatasetError):
    """A label the model or corpus does not know."""
