"""KServe's Python ModelServer serving one ONNX model with onnxruntime (KServe ships no onnx runtime of its own),
for bench/serving.py: ``python kserve_onnx.py --model_name bench --model_path m.onnx --http_port P --workers 1``.

Open Inference Protocol v2 over REST (``/v2/models/<name>/infer``); the session has the same options as mlspec's
server: one intra-op and one inter-op thread, no spinning. The other flags are ModelServer's own.
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    """One ONNX model with one input and one output, run by onnxruntime on CPU."""

    def __init__(self, name: str, path: str) -> None:
        """The model ``name`` served from the ONNX file at ``path`` (loaded now)."""
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        """Open the session."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True
        return True

    def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        """Run the first input (``[N, F]``, sent as float32) and answer the one output as JSON data."""
        rows = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        scores = self.session.run([self.output_name], {self.input_name: rows})[0]
        output = InferOutput(name=self.output_name, shape=list(scores.shape), datatype="FP32")
        output.set_data_from_numpy(scores, binary_data=False)
        response_id = payload.id or str(uuid.uuid4())  # as KServe's own runtimes answer a request without an id
        return InferResponse(response_id=response_id, model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    # ModelServer reads its own flags (--http_port, --workers, ...) from the command line when kserve is imported
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    ModelServer().start([OnnxModel(args.model_name, args.model_path)])
