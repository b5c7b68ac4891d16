# The demo app with its committed default model, for any container host.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=app:app skin_core/ skin_core/
COPY --chown=app:app app_pages/ app_pages/
COPY --chown=app:app models/default/ models/default/
COPY --chown=app:app sample_data/ sample_data/
COPY --chown=app:app .streamlit/ .streamlit/
COPY --chown=app:app streamlit_app.py train.py ./
# the app writes training runs and the active-model pointer into models/runs/ (compose.yaml keeps it in a
# named volume, which starts with this folder's owner) and evaluation reports beside the bundles in models/,
# so both belong to the app user, not to root as COPY leaves parents
RUN mkdir -p models/runs && chown app:app models models/runs

USER app
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"
CMD ["streamlit", "run", "streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
