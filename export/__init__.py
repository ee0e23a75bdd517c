"""Export of a trained run: ONNX bundle (to_onnx), precision variants (quantize), TensorRT engines (to_tensorrt)."""
