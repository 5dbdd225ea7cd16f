# One image for the API, the migration step and the workers.
# CPU build (default):  docker build -t dpsynth .
# GPU build:            docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t dpsynth:gpu .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# DejaVu fonts: budget statements (PDF) draw ε, δ and any dataset name with them.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 dpsynth
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY workers ./workers
COPY service ./service
COPY migrations ./migrations
# torch first, from the index that matches the hardware, so pip does not pick another build.
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 && pip install .

USER dpsynth
ENV DPSYNTH_DATA_DIR=/home/dpsynth/.dpsynth
EXPOSE 8000
CMD ["dpsynth", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
