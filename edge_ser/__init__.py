"""edge-ser: speech emotion recognition on the edge (the runtime: never imports torch or the toolchain)."""
from .errors import AudioError, BundleError, DatasetError, EdgeSerError, LabelError

__version__ = "0.2.0"
__all__ = ["AudioError", "BundleError", "DatasetError", "EdgeSerError", "LabelError", "Recognizer",
           "__version__"]


def __getattr__(name):
    if name == "Recognizer":  # lazy: `import edge_ser` stays cheap
        from .recognizer import Recognizer
        return Recognizer
    raise AttributeError(name)
