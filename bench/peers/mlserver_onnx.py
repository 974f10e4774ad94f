"""An onnxruntime runtime for Seldon MLServer (which ships none), for bench/serving.py.

The bench copies this file next to ``model-settings.json`` (MLServer puts that folder on ``sys.path``) and names
``mlserver_onnx.OnnxRuntime`` as the model's ``implementation``; ``parameters.uri`` is the ONNX file. The session
has the same options as mlspec's server: one intra-op and one inter-op thread, no spinning.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    """One ONNX model with one input and one output, run by onnxruntime on CPU."""

    async def load(self) -> bool:
        """Open the session on the model file named by ``parameters.uri``."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run the first input (``[N, F]``, any numeric datatype, sent as float32) and answer the one output."""
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        scores = self.session.run([self.output_name], {self.input_name: rows})[0]
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(self.output_name, scores)],
        )
