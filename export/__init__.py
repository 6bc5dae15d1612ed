"""Export toolchain: teachers, features, heads, distillation, quantization, graphs."""
