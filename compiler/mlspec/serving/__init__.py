"""mlspec's local model server: one Deployment's ONNX variants over the Open Inference Protocol v2 (KServe v2 REST).

Run it as ``python -m mlspec.serving --config /abs/serving.json``; drive it from Python with
``mlspec.serving.process`` (start / stop / is_running) and ``mlspec.serving.client`` (wait_ready, rollout_status).
Imported only by the serving target and the server itself, never by the CLI's fast paths.
"""
