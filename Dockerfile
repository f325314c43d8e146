# syntax=docker/dockerfile:1
# One image for every process: the API (default), `python -m worker`, `python -m scheduler`,
# `rq-dashboard ...` and `python -m db migrate` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=3000

WORKDIR /app

# The dependencies first, read from pyproject.toml alone, so that a code change does not
# reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
 && mkdir -p /app/data \
 && chown app:app /app/data

# data/ (recordings) is the only place the processes write to.
USER app
EXPOSE 3000
CMD ["python", "-m", "api"]
