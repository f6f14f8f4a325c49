# One image for the workers and the dashboard of docker-compose.yml: `tuner worker` by default.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY tuner ./tuner
RUN pip install -c constraints.txt '.[cpu,postgresql,s3,grpc]' && useradd --create-home --uid 1000 tuner \
    && mkdir /artifacts && chown tuner /artifacts
# The artifact store (retrained models); docker-compose.yml mounts one volume here everywhere,
# and a new volume takes this folder's owner.
ENV TUNER_ARTIFACTS=/artifacts
# The shipped studies; docker-compose.yml mounts ./studies over them, so edits need no rebuild.
COPY studies ./studies
USER tuner

ENTRYPOINT ["tuner", "worker"]
CMD ["studies/nyc-weather.toml"]
