"""torch → ONNX (dynamic batch, verified against torch) → TensorRT."""
