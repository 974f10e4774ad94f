# The runtime image: what Kubeflow pipeline steps, Feast jobs and run-submitting jobs run.
# mlspec with every engine extra (kfp, feast, mlflow, torch, onnx, evidently, shap, ...), pinned to
# requirements/lock.txt, installed from wheels in the build context (no index is reached while building).
# Built by `mlspec image build`, which prepares the context (see docs/images.md).
ARG BASE_IMAGE=python:3.11-slim

# The dependencies: the big layer, rebuilt only when the lock, the extras, the base or the torch build change.
FROM ${BASE_IMAGE} AS deps
# cpu by default; a CUDA build (e.g. cu128) selects the torch wheel of that local version (wheels/ must hold it).
ARG TORCH_VARIANT=cpu
COPY wheels/ /wheels/
COPY lock.txt extra-requirements.txt requirements-runtime.txt /build/
RUN python3 -m venv /opt/mlspec \
 && echo "torch==2.13.0+${TORCH_VARIANT}" > /build/torch.txt \
 && /opt/mlspec/bin/pip install --no-cache-dir --no-index --find-links /wheels --constraint /build/lock.txt \
      --constraint /build/extra-requirements.txt --constraint /build/torch.txt -r /build/requirements-runtime.txt \
 && /opt/mlspec/bin/pip uninstall --yes pip

# mlspec itself and the SBOM of the whole environment: only the files this stage adds reach the final image.
FROM deps AS app
COPY sbom-wheels/ /sbom-wheels/
COPY sbom-requirements.txt /build/
COPY mlspec/ /mlspec/
RUN python3 -m venv /opt/sbom \
 && /opt/sbom/bin/pip install --no-cache-dir --no-index --find-links /sbom-wheels -r /build/sbom-requirements.txt \
 && touch /build/stamp && sleep 1 \
 && /opt/sbom/bin/pip --python /opt/mlspec/bin/python install --no-cache-dir --no-index --no-deps /mlspec/*.whl \
 && /opt/sbom/bin/cyclonedx-py environment --output-reproducible --of JSON -o /opt/mlspec/sbom.cdx.json \
      /opt/mlspec/bin/python \
 && mkdir /out && cd /opt/mlspec && find . -newer /build/stamp ! -type d | tar -cf - -T - | tar -C /out -xf -

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/mlspec --shell /usr/sbin/nologin mlspec
COPY --from=deps /opt/mlspec /opt/mlspec
COPY --from=app /out/ /opt/mlspec/
ENV PATH=/opt/mlspec/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/mlspec
USER 10001:10001
WORKDIR /home/mlspec
