"""Export targets, one module per format (onnx.py; more formats join here).

Named ``exporters`` rather than ``export`` so that importing a target never
rebinds ``mlxport.export``, the public function.
"""
