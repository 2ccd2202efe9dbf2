"""mlxport serve: one model server speaking SageMaker and the Open Inference Protocol (KServe v2 / Triton)."""
