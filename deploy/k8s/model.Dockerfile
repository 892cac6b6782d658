# The model image for the Deployment's init container: one artifact in /model and a `cp` to deliver it.
# Build it with the artifact directory as the build context (nothing else is sent), e.g.
#   docker build -f deploy/k8s/model.Dockerfile -t sentiment-model:0.1.0 "$(realpath artifacts/latest)"
FROM busybox:1.37.0
COPY --chown=10001:10001 . /model/
USER 10001:10001
CMD ["cp", "-R", "/model/.", "/models/"]
