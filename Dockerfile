# gradwatch server: the dashboard and the trainer endpoint. No TensorFlow in this image.
#   docker build -t gradwatch .
#   docker run -p 127.0.0.1:8765:8765 -e GRADWATCH_TOKEN=... -v gradwatch-data:/data gradwatch
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gradwatch ./gradwatch
COPY server ./server
COPY trainer_hooks ./trainer_hooks
COPY client ./client
RUN pip install ".[server]" && useradd --create-home --uid 1000 gradwatch && mkdir -p /data \
    && chown gradwatch /data
USER gradwatch
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8765

# Binding 0.0.0.0 inside the container is what makes the published port reachable; the server prints its
# non-loopback warning. Publish the port on 127.0.0.1 of the host (or behind TLS), see SECURITY.md.
# --allowed-host names the Host headers accepted (DNS-rebinding guard): "server" for the compose network,
# localhost/127.0.0.1 for a browser on the Docker host.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8765/api/health', timeout=2).status != 200)"]
CMD ["gradwatch", "serve", "--host", "0.0.0.0", "--port", "8765", "--db", "/data/gradwatch.db", \
     "--token-file", "/data/token", "--allowed-host", "localhost", "--allowed-host", "127.0.0.1", \
     "--allowed-host", "server"]
