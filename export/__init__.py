"""The export toolchain (``edge_ser_export``): teachers, features, heads, distillation, quantization, graphs.

Installed with ``pip install edge-ser[export]``; the runtime reaches it only through entry points.
"""
