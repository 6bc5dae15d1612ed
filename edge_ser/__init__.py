"""edge-ser: speech emotion recognition on the edge (the runtime: never imports torch or the toolchain)."""
import os
import sys

from .errors import AudioError, BundleError, DatasetError, EdgeSerError, LabelError

# ONNX Runtime (1.2x and later) sends usage telemetry from native code: it writes a device id and queued events
# under ~/.cache/Microsoft and, about 9 s after a session is made, contacts mobile.events.data.microsoft.com.
# Only ORT_DISABLE_TELEMETRY=1, set before onnxruntime is imported, stops both (disable_telemetry_events() does
# not). It is set here, before any part of edge_ser can import onnxruntime (.errors does not), so it also holds
# in every process edge-ser starts (--jobs workers, bench probes, Dask workers: they import edge_ser first, and
# inherit the variable). ORT reads it once, when it is imported: if a host program imported onnxruntime before
# edge_ser without the variable, telemetry stays on in that process and the engine logs a warning (set the
# variable before any import to avoid it). Set ORT_DISABLE_TELEMETRY=0 yourself to keep ORT's default.
_ORT_IMPORTED_FIRST = "onnxruntime" in sys.modules and os.environ.get("ORT_DISABLE_TELEMETRY") != "1"
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.3.0"
__all__ = ["AudioError", "BundleError", "DatasetError", "EdgeSerError", "LabelError", "Recognizer",
           "__version__"]


def __getattr__(name):
    if name == "Recognizer":  # lazy: `import edge_ser` stays cheap
        from .recognizer import Recognizer
        return Recognizer
    raise AttributeError(name)
